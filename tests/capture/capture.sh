#!/usr/bin/env bash
# Records real OTP 25 dist traffic into nif/filter/testdata/ (or DIR).
# usage: tests/capture/capture.sh [DIR [SCENARIO...]]
# Loopback only; every node is a stock `erl -proto_dist inet_tcp`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/nif/filter/testdata}
[ $# -gt 0 ] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
erlc -Wall -Werror -o "$tmp" "$here/ktls_capture.erl"
timeout -s KILL 600 erl -noshell -pa "$tmp" -connect_all false \
  -eval 'ktls_capture:main(init:get_plain_arguments())' -extra "$out" "$@"
