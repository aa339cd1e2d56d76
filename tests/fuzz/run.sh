#!/usr/bin/env bash
# Builds the filter's libFuzzer target (nif/filter/channel_fuzz.cc, clang
# with -fsanitize=fuzzer,address,undefined through bazel --config=asan),
# replays the saved crash reproducers in tests/fuzz/regressions/, then
# fuzzes for a bounded time from a seed corpus made of the captured OTP 25
# streams (nif/filter/testdata). Last line: "SUMMARY passed=N failed=M".
#
#   KTLS_FUZZ_SECONDS   fuzzing time (default 50)
#   KTLS_FUZZ_CORPUS    working corpus, kept between runs
#                       (default _build/fuzz/corpus)
# A new crash is written to _build/fuzz/artifacts/; copy it into
# tests/fuzz/regressions/ together with the fix.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${KTLS_FUZZ_SECONDS:-50}
work="$root/_build/fuzz"
corpus=${KTLS_FUZZ_CORPUS:-$work/corpus}
seeds="$work/seeds"
artifacts="$work/artifacts"
mkdir -p "$corpus" "$artifacts"
passed=0
failed=0
summary() {
  echo "SUMMARY passed=$passed failed=$failed"
  [ "$failed" -eq 0 ]
  exit
}

if ! timeout 900 bazel build --config=asan //nif/filter:channel_fuzz; then
  echo "building the fuzz target failed" >&2
  failed=1
  summary
fi
fuzz="$(bazel info --config=asan bazel-bin 2>/dev/null)/nif/filter/channel_fuzz"

# Seeds: each capture's stream, cut at a packet boundary to at most 256 KiB
# (a file must start at its connection's first packet: the atom cache).
rm -rf "$seeds"
mkdir -p "$seeds"
python3 - "$root/nif/filter/testdata" "$seeds" <<'PY'
import os, sys
src, dst = sys.argv[1:]
limit = 256 * 1024
for name in sorted(os.listdir(src)):
    if not name.endswith(".dist"):
        continue
    data = open(os.path.join(src, name), "rb").read()
    pos = 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 4 + n > limit:
            break
        pos += 4 + n
    open(os.path.join(dst, name), "wb").write(data[:pos])
PY

# Saved reproducers: each must now run clean.
for f in "$root"/tests/fuzz/regressions/*; do
  [ -f "$f" ] || continue
  if timeout 60 "$fuzz" -runs=1 "$f"; then
    passed=$((passed + 1))
  else
    echo "regression input $(basename "$f") fails" >&2
    failed=$((failed + 1))
  fi
done

# One job: the machine's cores are shared. Inputs are streams of several
# packets, fragments up to 64 KiB: max_len covers two.
timeout $((seconds + 120)) "$fuzz" -max_total_time="$seconds" -max_len=262144 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
  "$corpus" "$seeds" 2>&1 | tee "$work/fuzz.log" | grep -vE '^(#[0-9]+.*(NEW|REDUCE|pulse)|"|###### )'
rc=${PIPESTATUS[0]}
execs=$(grep -E '^stat::number_of_executed_units' "$work/fuzz.log" | awk '{print $2}')
echo "fuzz: rc=$rc, ${execs:-?} executions in ${seconds}s, corpus $(ls "$corpus" | wc -l) files"
if [ "$rc" -eq 0 ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  ls -la "$artifacts" >&2
fi
summary
