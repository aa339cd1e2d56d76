#!/usr/bin/env bash
# Stage vm of ./ktls test: builds //carrier:ktls_kernel_test on the host
# (bazel -c opt) and runs it in one boot of the kTLS guest (run.sh exec),
# where a kernel without kTLS is a failure (KTLS_REQUIRE_KERNEL_TLS=1).
# Counts the test cases of its gtest XML; a case that skipped in the guest
# counts as failed. Last line: "SUMMARY passed=N failed=M".
#
# Only when QEMU cannot start at all (not installed, no kernel to boot,
# qemu-system-x86_64 exits before the guest runs) the stage prints
# "SKIPPED: QEMU cannot start: <why>" and counts nothing.
#
#   KTLS_VM_TIMEOUT   seconds the guest may run (default 480)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
t0=$SECONDS
cache=${KTLS_VM_CACHE:-$root/_build/vm}
rw=${KTLS_VM_RW:-$cache/rw}
xml=$rw/ktls_kernel_test.xml
passed=0
failed=0
summary() {
  echo "vm stage: $((SECONDS - t0)) s"
  echo "SUMMARY passed=$passed failed=$failed"
  [ "$failed" -eq 0 ]
  exit
}

if ! timeout 900 bazel build -c opt --jobs=2 //carrier:ktls_kernel_test; then
  echo "building //carrier:ktls_kernel_test failed" >&2
  failed=1
  summary
fi
bin="$(bazel info -c opt bazel-bin 2>/dev/null)/carrier/ktls_kernel_test"

mkdir -p "$rw"
rm -f "$xml"
KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-480} "$root/tests/vm/run.sh" exec -- \
  env TEST_TMPDIR=/tmp KTLS_REQUIRE_KERNEL_TLS=1 "$bin" --gtest_output="xml:$xml"
rc=$?
if [ "$rc" -eq 125 ] && grep -q '^cannot-start: ' "$cache/boot.status" 2>/dev/null; then
  echo "SKIPPED: QEMU cannot start: $(sed 's/^cannot-start: //' "$cache/boot.status")"
  summary
fi

read -r passed failed < <(python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0)
    sys.exit()
passed = failed = 0
for c in root.iter("testcase"):
    bad = c.find("failure") is not None or c.find("error") is not None
    skipped = c.find("skipped") is not None or c.get("result") == "skipped"
    if bad or skipped:
        failed += 1
        print("FAILED" if bad else "SKIPPED in the guest", c.get("classname") + "." + c.get("name"),
              file=sys.stderr)
    else:
        passed += 1
print(passed, failed)
PY
)
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no test results from the guest ($xml; guest status $rc)" >&2
  failed=1
elif [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "the guest run exited $rc although every case passed" >&2
  failed=1
fi
summary
