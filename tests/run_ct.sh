#!/usr/bin/env bash
# Common Test suites in tests/ct against the built application. Prints
# "SUMMARY passed=N failed=M" last. KTLS_CT_SUITES="a_SUITE b_SUITE" for a subset.
set -uo pipefail
: "${KTLS_ROOT:?run through ./ktls test}"
cd "$KTLS_ROOT"
logdir="${KTLS_CT_LOGDIR:-$KTLS_ROOT/_build/ct_logs}"
out="$logdir.out"
rm -rf "$logdir"
mkdir -p "$logdir" "$KTLS_ROOT/_build/test"
suites=()
for f in ${KTLS_CT_SUITES:-$(cd tests/ct && ls *_SUITE.erl | sed 's/\.erl$//')}; do
  suites+=("tests/ct/${f%.erl}.erl")
done
# Every node in these suites talks on 127.0.0.1 only. The runner's own node
# name is unique, so two checkouts can run their suites at once.
# Hard limit: a hung suite must not hang CI.
timeout -s KILL "${KTLS_CT_TIMEOUT:-1200}" ct_run -noshell -pa "$KTLS_ROOT/_build/lib/ktls_filter/ebin" \
  -logdir "$logdir" -dir tests/ct -suite "${suites[@]}" -sname "ct_$$" -erl_args -connect_all false \
  >"$out" 2>&1 </dev/null
rc=$?
cat "$out"
# One "TEST COMPLETE, N ok, M failed[, K skipped...]" line per suite: sum them.
read -r ok failed nlines < <(grep -E 'TEST COMPLETE' "$out" | awk '
  { for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^ok/) ok += $i
      if ($(i+1) ~ /^failed/) failed += $i
      if ($(i+1) == "automatically") failed += $i
    }
    n++ }
  END { print ok + 0, failed + 0, n + 0 }')
expected=${#suites[@]}
if [ "$nlines" -lt "$expected" ]; then
  echo "only $nlines of $expected suites completed" >&2
  failed=$((failed + expected - nlines))
fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
echo "SUMMARY passed=$ok failed=$failed"
