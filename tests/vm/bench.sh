#!/usr/bin/env bash
# ./ktls bench --vm [MIB [RUNS]]: in the kTLS guest (tests/vm/run.sh), the
# same bulk transfer between two ktls_filter nodes with the TLS record
# layer in the kernel, in user space, and without TLS; a markdown table of
# MiB/s and CPU per GiB (guest numbers: compare the rows, not the values
# with the host's). Defaults: 64 MiB, 3 runs.
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls bench --vm}"
mib=${1:-64}
runs=${2:-3}
rw=${KTLS_VM_RW:-$KTLS_ROOT/_build/vm/rw}
mkdir -p "$rw"
pki=$rw/bench_pki
rm -rf "$pki"
"$KTLS_ROOT/tools/certs.sh" "$pki" node@127.0.0.1 >/dev/null
bench_ebin=$KTLS_ROOT/_build/bench/ebin
mkdir -p "$bench_ebin"
erlc -o "$bench_ebin" "$KTLS_ROOT/tools/bench/ktls_bench.erl"
out=$rw/bench_ktls.md
"$KTLS_ROOT/tests/vm/run.sh" exec -t 1500 -- "$KTLS_ROOT/tests/vm/bench_guest.sh" "$out" \
  "$KTLS_ROOT/tests/vm/bench_ktls.escript" "$KTLS_ROOT/_build/lib/ktls_filter/ebin" \
  "$bench_ebin" "$pki/node.conf" "$mib" "$runs"
echo "table: $out"
