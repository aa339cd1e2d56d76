#!/usr/bin/env bash
# ./ktls demo: a small ktls_filter cluster on 127.0.0.1 (see tools/demo.escript).
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls demo}"
# epmd is needed for the demo's named nodes (it starts on 127.0.0.1 only).
ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 2>/dev/null || true
# The traffic generators of the bench run on the demo's nodes.
bench_ebin="$KTLS_ROOT/_build/bench/ebin"
mkdir -p "$bench_ebin"
erlc -o "$bench_ebin" "$KTLS_ROOT/tools/bench/ktls_bench.erl"
exec escript "$KTLS_ROOT/tools/demo.escript" "$KTLS_EBIN" "$bench_ebin" "$@"
