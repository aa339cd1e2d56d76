#!/usr/bin/env bash
# ./ktls demo: a small ktls_filter TLS cluster on 127.0.0.1 and a stock
# inet_tls_dist node joining it (see tools/demo.escript).
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls demo}"
# epmd is needed for the demo's named nodes (it starts on 127.0.0.1 only).
ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 2>/dev/null || true
# The traffic generators of the bench run on the demo's nodes.
bench_ebin="$KTLS_ROOT/_build/bench/ebin"
mkdir -p "$bench_ebin"
erlc -o "$bench_ebin" "$KTLS_ROOT/tools/bench/ktls_bench.erl"
# A throwaway CA and one certificate for the demo's nodes (TLS 1.3 and 1.2).
pki="$KTLS_ROOT/_build/demo/pki"
rm -rf "$pki"
"$KTLS_ROOT/tools/certs.sh" "$pki" node@127.0.0.1 >/dev/null
exec escript "$KTLS_ROOT/tools/demo.escript" "$KTLS_EBIN" "$bench_ebin" "$pki/node.conf" "$@"
