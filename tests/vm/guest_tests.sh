#!/usr/bin/env bash
# Runs inside the kTLS guest (tests/vm/stage.sh): the carrier's kTLS gtest,
# then the Erlang-level cases (erl_ktls.escript). Exit 0 only if both pass.
# usage: guest_tests.sh GTEST_BIN GTEST_XML ESCRIPT EBIN PKI_DIR ERL_OUT
set -u
bin=$1 xml=$2 escript_file=$3 ebin=$4 pki=$5 erl_out=$6
env TEST_TMPDIR=/tmp KTLS_REQUIRE_KERNEL_TLS=1 "$bin" --gtest_output="xml:$xml"
a=$?
escript "$escript_file" "$ebin" "$pki" 2>&1 | tee "$erl_out"
b=${PIPESTATUS[0]}
[ "$a" -eq 0 ] && [ "$b" -eq 0 ]
