#!/usr/bin/env bash
# Tests of the patched runtime (patches/): builds it if needed, checks THP on
# the super carrier with +MMthp true / false and on the stock VM, then runs
# the multi-node suites on the patched runtime. Prints "SUMMARY passed=N failed=M".
set -uo pipefail
: "${KTLS_ROOT:?run through ./ktls test}"
cd "$KTLS_ROOT"
pass=0
fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1: $2"; fail=$((fail + 1)); }

if ! "$KTLS_ROOT/patches/runtime.sh" build; then
  ko runtime_build "see the log lines above"
  echo "SUMMARY passed=$pass failed=$((fail + 1))"
  exit 1
fi
ok runtime_build
ERL_PATCHED=$("$KTLS_ROOT/patches/runtime.sh" path)
probe_dir="$KTLS_ROOT/_build/test/runtime"
mkdir -p "$probe_dir"
erlc -o "$probe_dir" "$KTLS_ROOT/tests/runtime/thp_probe.erl" || { ko compile_probe erlc; }

thp_mode=$(sed -E 's/.*\[(.*)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)

probe() { # erl-command args...
  local erl=$1
  shift
  timeout 120 "$erl" -noshell -pa "$probe_dir" "$@" -s thp_probe main 2>&1 | tr -d '\n'
}
# field NAME from the probe's map
field() { sed -nE "s/.*$2 => ([a-z0-9]+).*/\1/p" <<<"$1"; }

boot=$(timeout 60 "$ERL_PATCHED" -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>&1)
[ "$boot" = "25" ] && ok patched_vm_boots || ko patched_vm_boots "$boot"

on=$(probe "$ERL_PATCHED" +MMthp true +MMscs 1024)
echo "patched +MMthp true: $on"
if [ "$thp_mode" = "never" ]; then
  echo "SKIP thp_on (THP mode is never on this machine)"
else
  [ "$(field "$on" sc_size_mb)" = "1024" ] && ok thp_on_super_carrier_found || ko thp_on_super_carrier_found "$on"
  [ "$(field "$on" sc_aligned_2mb)" = "true" ] && ok thp_on_aligned_2mb || ko thp_on_aligned_2mb "$on"
  [ "$(field "$on" sc_hg)" = "true" ] && ok thp_on_hg_flag || ko thp_on_hg_flag "$on"
  [ "$(field "$on" sc_anon_huge_kb)" -gt 0 ] 2>/dev/null && ok thp_on_anon_huge_pages || ko thp_on_anon_huge_pages "$on"
fi
off=$(probe "$ERL_PATCHED" +MMthp false +MMscs 1024)
echo "patched +MMthp false: $off"
[ "$(field "$off" sc_hg)" = "false" ] && ok thp_off_no_hg_flag || ko thp_off_no_hg_flag "$off"
[ "$(field "$off" sc_anon_huge_kb)" = "0" ] && ok thp_off_no_anon_huge_pages || ko thp_off_no_anon_huge_pages "$off"
stock=$(probe erl +MMscs 1024)
echo "stock: $stock"
[ "$(field "$stock" sc_hg)" = "false" ] && ok stock_no_hg_flag || ko stock_no_hg_flag "$stock"
[ "$(field "$stock" sc_anon_huge_kb)" = "0" ] && ok stock_no_anon_huge_pages || ko stock_no_anon_huge_pages "$stock"
bad=$(timeout 30 "$ERL_PATCHED" +MMthp maybe -noshell -eval 'halt().' 2>&1)
[ -n "$bad" ] && ok bad_flag_value_rejected || ko bad_flag_value_rejected "no error for +MMthp maybe"

# A patch that does not apply: an error naming it, the installed runtime untouched.
bad_dir=$(mktemp -d)
cp "$KTLS_ROOT/patches/runtime.sh" "$bad_dir/"
printf 'bad.patch\n' >"$bad_dir/series"
printf -- '--- a/erts/emulator/beam/erl_init.c\n+++ b/erts/emulator/beam/erl_init.c\n@@ -1,3 +1,3 @@\n-no such line one\n+x\n no such line two\n no such line three\n' >"$bad_dir/bad.patch"
stamp_before=$(cat "$KTLS_ROOT/_build/runtime/.stamp")
msg=$(KTLS_RUNTIME_PATCHES="$bad_dir" "$KTLS_ROOT/patches/runtime.sh" build 2>&1)
rc=$?
if [ $rc -ne 0 ] && grep -q 'bad.patch' <<<"$msg" && [ "$(cat "$KTLS_ROOT/_build/runtime/.stamp")" = "$stamp_before" ]; then
  ok bad_patch_named_nothing_installed
else
  ko bad_patch_named_nothing_installed "rc=$rc: $msg"
fi
rm -rf "$bad_dir"

# patches/0002: the NIF sees the patched runtime and hands its buffers over.
zc() { # erl-command
  timeout 60 "$1" -pa "$KTLS_ROOT/_build/lib/ktls_filter/ebin" -proto_dist ktls_filter \
    -name "zc_$$_$RANDOM@127.0.0.1" -setcookie zc -noshell \
    -eval 'io:format("~p", [maps:get(zero_copy_rx, ktls_filter:carrier_stats())]), halt().' 2>&1
}
ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 2>/dev/null || true
v=$(zc "$ERL_PATCHED")
[ "$v" = "true" ] && ok patched_runtime_zero_copy_rx || ko patched_runtime_zero_copy_rx "$v"
v=$(zc erl)
[ "$v" = "false" ] && ok stock_runtime_copies_rx || ko stock_runtime_copies_rx "$v"

# The suites whose traffic goes through what the patches change (receive
# buffers handed to the VM as binaries, THP carriers) again, every node on
# the patched runtime with THP on: connections and dist traffic, TLS, and
# the filter (held, reassembled and rewritten messages). The others (bad
# input, attacks, trust rules, tools, load generator) test the carrier's and
# the policy's decisions, which do not depend on the runtime; they run on
# the stock runtime in the ct stage. That keeps the full run within its CI
# budget with OTP's own suites in it. KTLS_RUNTIME_CT_SUITES=all runs every
# suite here.
runtime_suites="ktls_dist_SUITE ktls_tls_SUITE ktls_filter_SUITE"
case "${KTLS_RUNTIME_CT_SUITES:-}" in
  all) runtime_suites="" ;;
  ?*) runtime_suites=$KTLS_RUNTIME_CT_SUITES ;;
esac
ct=$(KTLS_CT_LOGDIR="$KTLS_ROOT/_build/ct_logs_patched" KTLS_ERL="$ERL_PATCHED" KTLS_ERL_EXTRA="+MMthp true" \
  KTLS_CT_SUITES="$runtime_suites" "$KTLS_ROOT/tests/run_ct.sh" 2>&1 | tail -1)
echo "patched runtime CT: $ct"
p=$(sed -nE 's/.*passed=([0-9]+).*/\1/p' <<<"$ct")
f=$(sed -nE 's/.*failed=([0-9]+).*/\1/p' <<<"$ct")
pass=$((pass + ${p:-0}))
fail=$((fail + ${f:-1}))
echo "SUMMARY passed=$pass failed=$fail"
