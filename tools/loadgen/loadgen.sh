#!/usr/bin/env bash
# ./ktls loadgen: the swarm of simulated Erlang nodes (tools/loadgen).
#   ./ktls loadgen build                         build; lays out _build/loadgen/{bin,ebin}
#   ./ktls loadgen idle|storm|churn ARGS...      one run (options below);
#                                                report + plots in _build/loadgen/runs/TIME
#                                                unless --out DIR is given
#   ./ktls loadgen target --carrier C --port P --cookie K [--seconds S] [--ticktime T]
#                         [--tls OPTFILE]        a target node with the echo/stats helpers,
#                                                C = ktls_filter | inet_tcp | inet_tls; stops
#                                                after S s; --tls: TLS with OPTFILE (ktls_filter:
#                                                -ktls_filter_optfile, inet_tls: -ssl_dist_optfile;
#                                                ./ktls certs makes one)
#   ./ktls loadgen scale [--conns N] [--ticktime T] [--window S] [--carriers C,...]
#                        [--tls OPTFILE]         idle connections (default 10,000) against one
#                                                target per carrier: memory per connection,
#                                                tick CPU, handshakes/s; C = ktls_filter,
#                                                ktls_filter_ring (-ktls_filter rx_reader ring),
#                                                inet_tcp, ktls_filter_tls, ktls_filter_tls_ring,
#                                                inet_tls (default all; TLS certificates made
#                                                unless --tls); each capped by its descriptors;
#                                                report in _build/loadgen/scale/TIME
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls loadgen}"
# shellcheck source=tools/ktls_lib.sh
source "$KTLS_ROOT/tools/ktls_lib.sh"
LG_DIR="$KTLS_BUILD/loadgen"
LG_BIN="$LG_DIR/bin/ktls_loadgen"
LG_EBIN="$LG_DIR/ebin"

lg_build() {
  ktls_log "building loadgen (bazel)"
  mkdir -p "$LG_DIR/bin" "$LG_EBIN"
  bazel build //tools/loadgen:ktls_loadgen //tools/loadgen:target_ebin >"$LG_DIR/build.log" 2>&1 || {
    cat "$LG_DIR/build.log" >&2
    ktls_log "loadgen build failed"
    return 1
  }
  local bin
  bin=$(bazel info bazel-bin 2>/dev/null)
  cp -f "$bin/tools/loadgen/ktls_loadgen" "$LG_BIN"
  cp -f "$bin"/tools/loadgen/ebin/*.beam "$LG_EBIN"/
  chmod -R u+w "$LG_DIR"
}

# Builds unless the binary and the helpers are newer than their sources
# (a checkout moved on since the last build).
lg_ensure_built() {
  if [ -x "$LG_BIN" ] && [ -f "$LG_EBIN/ktls_loadgen_target.beam" ] &&
    [ -z "$(find "$KTLS_ROOT/tools/loadgen" "$KTLS_ROOT/carrier" -newer "$LG_BIN" -print -quit)" ]; then
    return 0
  fi
  lg_build
}

# A target node in the foreground for --seconds (default 300), printing its
# OS pid (for --target-pid).
lg_target() {
  local carrier=ktls_filter port="" cookie="" seconds=300 ticktime=60 tls=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --carrier) carrier=${2:-}; shift 2 ;;
      --port) port=${2:-}; shift 2 ;;
      --cookie) cookie=${2:-}; shift 2 ;;
      --seconds) seconds=${2:-}; shift 2 ;;
      --ticktime) ticktime=${2:-}; shift 2 ;;
      --tls) tls=${2:-}; shift 2 ;;
      *) echo "loadgen target: unknown argument '$1'" >&2; exit 2 ;;
    esac
  done
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "loadgen target: --port P is required" >&2; exit 2; }
  [ -n "$cookie" ] || { echo "loadgen target: --cookie C is required" >&2; exit 2; }
  if [ -n "$tls" ] && [ ! -r "$tls" ]; then
    echo "loadgen target: --tls $tls: no such readable file" >&2
    exit 2
  fi
  # Every carrier listens on the fixed port that ktls_filter_epmd gives it.
  local dist=(-pa "$KTLS_EBIN" -proto_dist "$carrier" -epmd_module ktls_filter_epmd
              -start_epmd false -ktls_filter_port "$port")
  case "$carrier" in
    ktls_filter) [ -z "$tls" ] || dist+=(-ktls_filter_optfile "$tls") ;;
    inet_tcp)
      [ -z "$tls" ] || { echo "loadgen target: --tls with --carrier inet_tcp (use inet_tls)" >&2; exit 2; } ;;
    inet_tls)
      [ -n "$tls" ] || { echo "loadgen target: --carrier inet_tls needs --tls OPTFILE" >&2; exit 2; }
      dist+=(-ssl_dist_optfile "$tls") ;;
    *) echo "loadgen target: --carrier ktls_filter|inet_tcp|inet_tls" >&2; exit 2 ;;
  esac
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  exec erl -noshell -pa "$LG_EBIN" "${dist[@]}" -kernel net_ticktime "$ticktime" \
    -name "lg_target_$port@127.0.0.1" -setcookie "$cookie" -connect_all false \
    -eval "ktls_loadgen_target:start(),
           io:format(\"target ~s (~s~s) on 127.0.0.1:~s, OS pid ~s, stops in ~ss~n\",
                     [node(), \"$carrier\", \"${tls:+, TLS}\", \"$port\", os:getpid(),
                      \"$seconds\"]),
           timer:sleep($seconds * 1000), erlang:halt()."
}

lg_run() {
  local out="" a
  for a in "$@"; do
    [ "${prev:-}" = "--out" ] && out=$a
    prev=$a
  done
  local args=("$@")
  if [ -z "$out" ]; then
    out="$LG_DIR/runs/$(date +%Y%m%d-%H%M%S)-$1"
    args+=(--out "$out")
  fi
  mkdir -p "$out"
  "$LG_BIN" "${args[@]}"
  if command -v gnuplot >/dev/null && [ -f "$out/timeline.tsv" ]; then
    local storm=0
    [ "$1" = storm ] && storm=1
    gnuplot -e "dir='$out'; storm=$storm" "$KTLS_ROOT/tools/loadgen/plot.gp" 2>"$out/plot.log" ||
      ktls_log "plots failed, see $out/plot.log"
  fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) lg_build ;;
  idle | storm | churn)
    lg_ensure_built
    lg_run "$cmd" "$@" ;;
  target)
    lg_ensure_built
    lg_target "$@" ;;
  scale)
    lg_ensure_built
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    out="$LG_DIR/scale/$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$out"
    exec escript "$KTLS_ROOT/tools/loadgen/scale.escript" "$KTLS_ROOT" "$LG_BIN" "$LG_EBIN" "$out" "$@" ;;
  help | -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    # The options are the binary's own --help: build it first on a fresh
    # checkout (quietly, so that the help stays readable).
    lg_ensure_built >/dev/null
    "$LG_BIN" --help | sed -n '2,$p' ;;
  *)
    echo "ktls loadgen: unknown command '$cmd' (./ktls loadgen help)" >&2
    exit 2 ;;
esac
