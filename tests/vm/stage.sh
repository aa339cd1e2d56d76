#!/usr/bin/env bash
# Stage vm of ./ktls test: builds //carrier:ktls_kernel_test on the host
# (bazel -c opt) and runs it in one boot of the kTLS guest (run.sh exec),
# where a kernel without kTLS is a failure (KTLS_REQUIRE_KERNEL_TLS=1);
# in the same boot tests/vm/erl_ktls.escript runs real OTP nodes over kTLS
# (two ktls_filter nodes; a stock inet_tls_dist node against one, TLS 1.2
# and 1.3). Counts the test cases of the gtest XML and the escript's
# ERL_CASE lines; a case that skipped in the guest counts as failed. Last
# line: "SUMMARY passed=N failed=M".
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
# Certificates for the Erlang cases, made on the host (openssl is faster here).
pki=$rw/pki
erl_out=$rw/erl_ktls.out
rm -rf "$pki" "$erl_out"
if ! "$root/tools/certs.sh" "$pki" node@127.0.0.1 >/dev/null ||
  ! KTLS_CERTS_VERSIONS="'tlsv1.3'" "$root/tools/certs.sh" "$pki" n13@127.0.0.1 >/dev/null; then
  echo "tools/certs.sh failed" >&2
  failed=1
fi
ebin=$root/_build/lib/ktls_filter/ebin
KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-480} "$root/tests/vm/run.sh" exec -- \
  "$root/tests/vm/guest_tests.sh" "$bin" "$xml" "$root/tests/vm/erl_ktls.escript" "$ebin" "$pki" \
  "$erl_out"
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
# The Erlang cases: one ERL_CASE line each; fewer than expected is a failure.
erl_passed=$(grep -c '^ERL_CASE [a-z0-9_]* passed' "$erl_out" 2>/dev/null)
erl_failed=$(grep -c '^ERL_CASE [a-z0-9_]* failed' "$erl_out" 2>/dev/null)
grep '^ERL_CASE [a-z0-9_]* failed' "$erl_out" 2>/dev/null | cut -c1-600 >&2
erl_expected=3
if [ "$((erl_passed + erl_failed))" -lt "$erl_expected" ]; then
  echo "only $((erl_passed + erl_failed)) of $erl_expected Erlang kTLS cases reported" >&2
  erl_failed=$((erl_expected - erl_passed))
fi
passed=$((passed + erl_passed))
failed=$((failed + erl_failed))
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no test results from the guest ($xml; guest status $rc)" >&2
  failed=1
elif [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "the guest run exited $rc although every case passed" >&2
  failed=1
fi
summary
