#!/usr/bin/env bash
# Stock runtime vs the THP-patched runtime (+MMthp true) on a memory-heavy
# workload, alternating, 3 runs each; prints a markdown table of medians.
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls bench --thp}"
ebin="$KTLS_ROOT/_build/bench/ebin"
mkdir -p "$ebin"
erlc -o "$ebin" +warnings_as_errors "$KTLS_ROOT/tools/bench/thp_workload.erl"
"$KTLS_ROOT/patches/runtime.sh" build >&2
patched=$("$KTLS_ROOT/patches/runtime.sh" path)
declare -A res
for rep in 1 2 3; do
  for v in stock patched; do
    if [ $v = stock ]; then
      out=$(erl +MMscs 4096 -noshell -pa "$ebin" -s thp_workload main | tr -d '\n ')
    else
      out=$("$patched" +MMthp true +MMscs 4096 -noshell -pa "$ebin" -s thp_workload main | tr -d '\n ')
    fi
    echo "rep $rep $v: $out" >&2
    for k in ets_fill_us ets_lookup_us binaries_us total_us; do
      res[$v.$k]+="$(sed -nE "s/.*$k=>([0-9]+).*/\1/p" <<<"$out") "
    done
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | sed -n 2p; }
echo "| phase (ms, median of 3) | stock | patched +MMthp true | patched / stock |"
echo "|---|---:|---:|---:|"
for k in ets_fill_us ets_lookup_us binaries_us total_us; do
  s=$(median "${res[stock.$k]}")
  p=$(median "${res[patched.$k]}")
  awk -v k="$k" -v s="$s" -v p="$p" 'BEGIN { printf "| %s | %.0f | %.0f | %.2fx |\n", k, s/1000, p/1000, p/s }'
done
