#!/usr/bin/env bash
# Runs inside the kTLS guest (tests/vm/bench.sh): the escript, its table
# also written to OUT. usage: bench_guest.sh OUT ESCRIPT ARGS...
set -u
out=$1
shift
escript "$@" | tee "$out"
exit "${PIPESTATUS[0]}"
