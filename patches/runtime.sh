#!/usr/bin/env bash
# ./ktls runtime build | erl ARGS... | path | source
# Builds Debian's OTP 25.2.3 emulator with the patch series of patches/ and
# installs it under _build/runtime/ next to the installed OTP libraries (the
# system's OTP is not touched). See patches/README.md.
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls runtime}"
VERSION="1:25.2.3+dfsg-1+deb12u4"
UPSTREAM="25.2.3+dfsg"
ERTS_VSN="13.1.5"
SRC_CACHE="$KTLS_ROOT/_build/runtime-src"
OUT="$KTLS_ROOT/_build/runtime"
PATCHES="${KTLS_RUNTIME_PATCHES:-$KTLS_ROOT/patches}"  # override: tests only
log() { printf 'runtime: %s\n' "$*" >&2; }
die() { printf 'runtime: error: %s\n' "$*" >&2; exit 1; }

series_hash() {
  (cd "$PATCHES" && cat series $(grep -v '^#' series) runtime.sh) | sha256sum | cut -c1-16
}

ensure_packages() {
  local need=() p
  for p in dpkg-dev build-essential; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
}

# Debian's source package (with Debian's own patches applied), cached.
fetch_source() {
  local clean="$SRC_CACHE/debian-src"
  [ -f "$clean/OTP_VERSION" ] && return 0
  command -v dpkg-source >/dev/null || ensure_packages
  mkdir -p "$SRC_CACHE"
  if ! ls "$SRC_CACHE"/erlang_"$UPSTREAM"-*.dsc >/dev/null 2>&1; then
    if ! grep -rqs 'deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "adding deb-src entries for bookworm (apt-get source needs them)"
      cat >/etc/apt/sources.list.d/ktls-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    apt-get update -q >/dev/null
    (cd "$SRC_CACHE" && apt-get source --download-only "erlang=$VERSION" >"$SRC_CACHE/download.log" 2>&1) ||
      die "apt-get source erlang=$VERSION failed (see $SRC_CACHE/download.log)"
  fi
  rm -rf "$clean"
  (cd "$SRC_CACHE" && dpkg-source -x erlang_"$UPSTREAM"-*.dsc debian-src >/dev/null) ||
    die "dpkg-source -x failed"
}

build() {
  local hash stamp work
  hash=$(series_hash)
  stamp="$OUT/.stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && [ -x "$OUT/bin/beam.smp" ]; then
    log "up to date ($OUT)"
    return 0
  fi
  ensure_packages
  fetch_source
  work="$SRC_CACHE/build-$hash"
  if [ ! -f "$work/.patched" ]; then
    rm -rf "$work"
    cp -a "$SRC_CACHE/debian-src" "$work"
    local p
    while read -r p; do
      case "$p" in '' | \#*) continue ;; esac
      [ -f "$PATCHES/$p" ] || die "series names $p, which is not in patches/"
      if ! patch -d "$work" -p1 --dry-run -s <"$PATCHES/$p" >/dev/null; then
        rm -rf "$work"
        die "patch $p does not apply to erlang $VERSION"
      fi
      patch -d "$work" -p1 -s <"$PATCHES/$p" >/dev/null
      log "applied $p"
    done <"$PATCHES/series"
    touch "$work/.patched"
  fi
  if [ ! -f "$work/erts/x86_64-pc-linux-gnu/config.h" ] && [ ! -f "$work/.configured" ]; then
    log "configure (about 1-2 minutes)"
    (cd "$work" && ERL_TOP="$work" ./configure --without-wx --without-javac --without-odbc --without-termcap \
      --without-jinterface --enable-jit >"$work/configure.log" 2>&1) ||
      die "configure failed (see $work/configure.log)"
    touch "$work/.configured"
  fi
  log "building the emulator and erlexec (a few minutes, -j2)"
  (cd "$work" && ERL_TOP="$work" make -C erts/emulator -j2 opt FLAVOR=jit >"$work/make.log" 2>&1) ||
    die "emulator build failed (see $work/make.log)"
  local target beam erlexec
  target=$(cd "$work" && ls -d bin/*-linux-gnu | head -1)
  (cd "$work" && ERL_TOP="$work" make -C erts/etc/common -f "${target#bin/}/Makefile" TYPE=opt \
    "$work/$target/erlexec" >"$work/make-erlexec.log" 2>&1) ||
    die "erlexec build failed (see $work/make-erlexec.log)"
  beam="$work/$target/beam.jit"
  [ -x "$beam" ] || beam="$work/$target/beam.smp"
  erlexec="$work/$target/erlexec"
  [ -x "$beam" ] || die "no beam binary in $work/$target"
  [ -x "$erlexec" ] || die "no erlexec in $work/$target"
  # Install into a fresh directory, then swap: nothing half-installed.
  local tmp="$OUT.new"
  rm -rf "$tmp"
  mkdir -p "$tmp/bin"
  cp -a /usr/lib/erlang/erts-"$ERTS_VSN"/bin/. "$tmp/bin/"
  cp -f "$beam" "$tmp/bin/beam.smp"
  cp -f "$erlexec" "$tmp/bin/erlexec"
  cat >"$tmp/bin/erl" <<WRAP
#!/bin/sh
# The patched runtime against the installed OTP libraries.
ROOTDIR=/usr/lib/erlang BINDIR="$OUT/bin" EMU=beam PROGNAME=erl
export ROOTDIR BINDIR EMU PROGNAME
exec "$OUT/bin/erlexec" "\$@"
WRAP
  chmod +x "$tmp/bin/erl"
  echo "$hash" >"$tmp/.stamp"
  rm -rf "$OUT"
  mv "$tmp" "$OUT"
  log "installed $OUT/bin/erl"
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  erl) build; exec "$OUT/bin/erl" "$@" ;;
  path)
    # For scripts: the wrapper's path, and an error while it is not built.
    echo "$OUT/bin/erl"
    [ -x "$OUT/bin/erl" ] || { echo "ktls runtime: not built yet (./ktls runtime build)" >&2; exit 1; } ;;
  # The unpacked source tree (tests/otp takes OTP's own test suites from it).
  source) fetch_source; echo "$SRC_CACHE/debian-src" ;;
  *) echo "usage: ./ktls runtime build | erl ARGS... | path | source" >&2; exit 2 ;;
esac
