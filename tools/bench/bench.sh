#!/usr/bin/env bash
# ./ktls bench [--quick]: see tools/bench/bench.escript.
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls bench}"
if [ "${1:-}" = "--thp" ]; then
  shift
  exec "$KTLS_ROOT/tools/bench/thp_bench.sh" "$@"
fi
ebin="$KTLS_ROOT/_build/bench/ebin"
out="$KTLS_ROOT/_build/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ebin" "$out"
erlc -o "$ebin" +warnings_as_errors "$KTLS_ROOT/tools/bench/ktls_bench.erl"
ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 2>/dev/null || true
exec escript "$KTLS_ROOT/tools/bench/bench.escript" "$KTLS_ROOT" "$ebin" "$out" "$@"
