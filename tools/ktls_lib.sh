# Shared functions of the ./ktls command (sourced, not run).
KTLS_BUILD="$KTLS_ROOT/_build"
KTLS_APP="$KTLS_BUILD/lib/ktls_filter"
KTLS_EBIN="$KTLS_APP/ebin"
KTLS_PRIV="$KTLS_APP/priv"
export KTLS_BUILD KTLS_APP KTLS_EBIN KTLS_PRIV

ktls_log() { printf 'ktls: %s\n' "$*" >&2; }

# Packages from tools/packages.txt that dpkg does not report installed.
ktls_missing_packages() {
  local p missing=()
  while read -r p; do
    [ -z "$p" ] && continue
    case "$p" in \#*) continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done <"$KTLS_ROOT/tools/packages.txt"
  echo "${missing[@]:-}"
}

ktls_setup() {
  local missing
  missing=$(ktls_missing_packages)
  if [ -z "$missing" ]; then
    return 0
  fi
  ktls_log "installing: $missing"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null
}

ktls_ensure_setup() {
  [ -z "$(ktls_missing_packages)" ] || ktls_setup
}

# Build everything with Bazel and lay out the OTP application.
ktls_build() {
  ktls_log "building (bazel)"
  mkdir -p "$KTLS_BUILD"
  # KTLS_BUILD_TARGETS: a subset while iterating (default everything).
  bazel build ${KTLS_BUILD_TARGETS:-//...} >"$KTLS_BUILD/build.log" 2>&1 || {
    cat "$KTLS_BUILD/build.log" >&2
    ktls_log "bazel build failed"
    return 1
  }
  mkdir -p "$KTLS_EBIN" "$KTLS_PRIV"
  local bin
  bin=$(bazel info bazel-bin 2>/dev/null)
  if [ -d "$bin/erlang/ebin" ]; then
    rm -f "$KTLS_EBIN"/*.beam
    cp -f "$bin"/erlang/ebin/*.beam "$KTLS_EBIN"/
    # The .app file: app.src with the modules that were actually built.
    erl -noshell -eval '
      [Src, Ebin] = init:get_plain_arguments(),
      {ok, [{application, App, Props}]} = file:consult(Src),
      Mods = lists:sort([list_to_atom(filename:basename(F, ".beam"))
                         || F <- filelib:wildcard(filename:join(Ebin, "*.beam"))]),
      Out = io_lib:format("~p.~n", [{application, App, lists:keystore(modules, 1, Props, {modules, Mods})}]),
      ok = file:write_file(filename:join(Ebin, atom_to_list(App) ++ ".app"), Out),
      halt().' -extra "$KTLS_ROOT/erlang/src/ktls_filter.app.src" "$KTLS_EBIN"
  fi
  if [ -f "$bin/nif/ktls_filter_nif.so" ]; then
    # Running nodes have the old library mapped: writing over it (cp -f
    # truncates the file in place) makes them fault in the NIF. A new file
    # renamed over the old name leaves their mapping alone.
    local tmp="$KTLS_PRIV/.ktls_filter_nif.so.$$"
    cp "$bin/nif/ktls_filter_nif.so" "$tmp" && chmod u+w "$tmp" &&
      mv -f "$tmp" "$KTLS_PRIV/ktls_filter_nif.so" || {
      rm -f "$tmp"
      ktls_log "could not install $KTLS_PRIV/ktls_filter_nif.so"
      return 1
    }
  fi
  chmod -R u+w "$KTLS_APP"
}

ktls_ensure_built() {
  [ -f "$KTLS_PRIV/ktls_filter_nif.so" ] || { ktls_ensure_setup; ktls_build; }
}
