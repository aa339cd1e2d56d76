#!/usr/bin/env bash
# EUnit tests of erlang/test/*_tests.erl against the built application.
# Prints "SUMMARY passed=N failed=M" last.
set -uo pipefail
: "${KTLS_ROOT:?run through ./ktls test}"
cd "$KTLS_ROOT"
out="$KTLS_ROOT/_build/test/eunit_ebin"
rm -rf "$out"
mkdir -p "$out"
ebin="$KTLS_ROOT/_build/lib/ktls_filter/ebin"
erlc -o "$out" -pa "$ebin" +debug_info erlang/test/*_tests.erl || {
  echo "SUMMARY passed=0 failed=1"
  exit 1
}
erl -noshell -pa "$ebin" -pa "$out" -eval '
  Mods = [list_to_atom(filename:basename(F, ".beam"))
          || F <- filelib:wildcard("'"$out"'/*_tests.beam")],
  Res = eunit:test(Mods, [verbose]),
  io:format("eunit result: ~p~n", [Res]),
  halt(case Res of ok -> 0; _ -> 1 end).' >"$KTLS_ROOT/_build/test/eunit.raw" 2>&1
rc=$?
cat "$KTLS_ROOT/_build/test/eunit.raw"
# "All 12 tests passed." or "Failed: 1.  Skipped: 0.  Passed: 11."
raw="$KTLS_ROOT/_build/test/eunit.raw"
if grep -qE 'All [0-9]+ tests passed' "$raw"; then
  p=$(grep -oE 'All [0-9]+ tests passed' "$raw" | grep -oE '[0-9]+' | tail -1)
  f=0
elif grep -qE 'Test passed\.' "$raw"; then
  p=1
  f=0
else
  p=$(grep -oE 'Passed: [0-9]+' "$raw" | grep -oE '[0-9]+' | tail -1)
  f=$(grep -oE 'Failed: [0-9]+' "$raw" | grep -oE '[0-9]+' | tail -1)
  p=${p:-0}
  f=${f:-1}
fi
[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
echo "SUMMARY passed=$p failed=$f"
