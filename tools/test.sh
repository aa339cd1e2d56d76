#!/usr/bin/env bash
# ./ktls test: every test of the project, each stage counted per test case.
# Ends with one line "N passed, N failed"; exit 0 only when nothing failed.
#
# Stages: gtest (bazel test), gtest under ASan+UBSan (clang), libFuzzer
# (bounded), EUnit, Common Test (multi-node suites), patched runtime (THP),
# kTLS on a real kernel in a QEMU guest (vm), and OTP's own distribution
# suites with every node on ktls_filter (otp, tests/otp/run.sh; about 15
# minutes, most of it OTP's own timers: inet_tcp takes as long).
# KTLS_TEST_STAGES="gtest ct" runs a subset.
set -uo pipefail
: "${KTLS_ROOT:?run through ./ktls test}"
cd "$KTLS_ROOT"
LOGDIR="$KTLS_ROOT/_build/test"
mkdir -p "$LOGDIR"
# Stages whose runner is not in the tree yet are not listed by default.
default_stages="gtest asan"
[ -x "$KTLS_ROOT/tests/fuzz/run.sh" ] && default_stages+=" fuzz"
default_stages+=" eunit ct"
[ -x "$KTLS_ROOT/tests/runtime/run.sh" ] && default_stages+=" runtime"
[ -x "$KTLS_ROOT/tests/vm/stage.sh" ] && default_stages+=" vm"
[ -x "$KTLS_ROOT/tests/otp/run.sh" ] && default_stages+=" otp"
STAGES=${KTLS_TEST_STAGES:-$default_stages}
total_pass=0
total_fail=0
total_skip=0

record() { # stage passed failed [skipped]
  local skipped=${4:-0}
  printf 'stage %-8s %5d passed, %d failed' "$1" "$2" "$3"
  [ "$skipped" -gt 0 ] && printf ', %d skipped' "$skipped"
  # How long the stage took (the CI run has a time budget).
  printf ' (%d s)\n' $((SECONDS - stage_started))
  total_pass=$((total_pass + $2))
  total_fail=$((total_fail + $3))
  total_skip=$((total_skip + skipped))
}

# Counts <testcase>, failures and skips (GTEST_SKIP: not a pass) in the
# test.xml of each test target of this workspace (runs_per_test leftovers
# in run_K_of_N/ are not counted).
count_bazel_xml() { # testlogs-dir target...
  python3 - "$@" <<'PY'
import sys, os, xml.etree.ElementTree as ET
logs, targets = sys.argv[1], sys.argv[2:]
passed = failed = skipped = 0
for t in targets:
    pkg, name = t.lstrip("/").split(":")
    f = os.path.join(logs, pkg, name, "test.xml")
    try:
        root = ET.parse(f).getroot()
    except (OSError, ET.ParseError):
        failed += 1  # no result: the test binary did not run or crashed
        continue
    cases = list(root.iter("testcase"))
    if not cases:
        failed += 1
    for c in cases:
        if c.find("failure") is not None or c.find("error") is not None:
            failed += 1
        elif c.find("skipped") is not None or c.get("result") == "skipped":
            skipped += 1
        else:
            passed += 1
print(passed, failed, skipped)
PY
}

stage_bazel() { # name, extra bazel args...
  local name=$1
  shift
  local out="$LOGDIR/$name.log"
  bazel test "$@" //... >"$out" 2>&1
  local rc=$?
  local testlogs targets
  testlogs=$(bazel info "$@" bazel-testlogs 2>/dev/null)
  targets=$(bazel query 'tests(//...)' 2>/dev/null)
  # shellcheck disable=SC2086
  read -r p f k < <(count_bazel_xml "$testlogs" $targets)
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "bazel test $* failed (rc=$rc) without a failing case; see $out" >&2
    tail -30 "$out" >&2
    f=1
  fi
  [ "$f" -gt 0 ] && grep -E 'FAILED|TIMEOUT' "$out" | head -20 >&2
  record "$name" "$p" "$f" "$k"
}

stage_script() { # name script
  local name=$1 script=$2 out="$LOGDIR/$1.log"
  if [ ! -x "$script" ]; then
    echo "stage $name: $script missing" >&2
    record "$name" 0 1
    return
  fi
  "$script" >"$out" 2>&1
  local rc=$?
  local line p=0 f=1 k=0
  line=$(grep -E '^SUMMARY passed=[0-9]+ failed=[0-9]+' "$out" | tail -1)
  if [ -n "$line" ]; then
    p=$(sed -E 's/.*passed=([0-9]+).*/\1/' <<<"$line")
    f=$(sed -E 's/.*failed=([0-9]+).*/\1/' <<<"$line")
    # Optional: cases skipped with a reason written in the runner.
    grep -qE 'skipped=[0-9]+' <<<"$line" && k=$(sed -E 's/.*skipped=([0-9]+).*/\1/' <<<"$line")
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$f" -gt 0 ]; then
    echo "stage $name failed; last lines of $out:" >&2
    tail -40 "$out" >&2
  fi
  # A stage that could not run at all says so on a line of its own.
  grep -E '^SKIPPED: ' "$out"
  # The otp stage's would_drop totals (monitor mode on OTP's own traffic).
  grep -E '^WOULD_DROP ' "$out"
  record "$name" "$p" "$f" "$k"
}

for s in $STAGES; do
  stage_started=$SECONDS
  case "$s" in
    gtest) stage_bazel gtest ;;
    asan) stage_bazel asan --config=asan ;;
    fuzz) stage_script fuzz "$KTLS_ROOT/tests/fuzz/run.sh" ;;
    eunit) stage_script eunit "$KTLS_ROOT/tests/run_eunit.sh" ;;
    ct) stage_script ct "$KTLS_ROOT/tests/run_ct.sh" ;;
    runtime) stage_script runtime "$KTLS_ROOT/tests/runtime/run.sh" ;;
    vm) stage_script vm "$KTLS_ROOT/tests/vm/stage.sh" ;;
    otp) stage_script otp "$KTLS_ROOT/tests/otp/run.sh" ;;
    *) echo "unknown stage $s" >&2; record "$s" 0 1 ;;
  esac
done

if [ "$total_skip" -gt 0 ]; then
  echo "${total_pass} passed, ${total_fail} failed, ${total_skip} skipped"
else
  echo "${total_pass} passed, ${total_fail} failed"
fi
[ "$total_fail" -eq 0 ]
