#!/usr/bin/env bash
# ./ktls remsh NAME@HOST --port P --cookie C [--carrier ktls_filter|inet_tcp|inet_tls]
#              [--tls OPTFILE]
# A remote shell on NAME@HOST straight to its dist port P: no epmd is asked
# (ktls_filter_epmd resolves NAME@HOST to HOST:P) and this node does not listen.
# The target may be a ktls_filter node or a stock one (--carrier inet_tcp, or
# inet_tls with --tls); --tls gives TLS options in -ssl_dist_optfile format
# (to a ktls_filter node: -ktls_filter_optfile, to inet_tls: -ssl_dist_optfile).
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls remsh}"
usage() {
  echo "usage: ./ktls remsh NAME@HOST --port PORT --cookie COOKIE" \
    "[--carrier ktls_filter|inet_tcp|inet_tls] [--tls OPTFILE]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
target=$1
shift
port="" cookie="" carrier=ktls_filter tls=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=${2:-}; shift 2 ;;
    --cookie) cookie=${2:-}; shift 2 ;;
    --carrier) carrier=${2:-}; shift 2 ;;
    --tls) tls=${2:-}; shift 2 ;;
    *) echo "remsh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$target" in *@*) ;; *) echo "remsh: '$target' is not NAME@HOST" >&2; usage ;; esac
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || {
  echo "remsh: --port must be a TCP port number, got '$port'" >&2
  usage
}
[ -n "$cookie" ] || { echo "remsh: --cookie is required" >&2; usage; }
tlsargs=()
case "$carrier" in
  ktls_filter) [ -n "$tls" ] && tlsargs=(-ktls_filter_optfile "$tls") ;;
  inet_tls)
    [ -n "$tls" ] || { echo "remsh: --carrier inet_tls needs --tls OPTFILE" >&2; usage; }
    tlsargs=(-ssl_dist_optfile "$tls")
    ;;
  inet_tcp) [ -z "$tls" ] || { echo "remsh: --tls with --carrier inet_tcp (use inet_tls)" >&2; usage; } ;;
  *) echo "remsh: --carrier must be ktls_filter, inet_tcp or inet_tls, got '$carrier'" >&2; usage ;;
esac
if [ -n "$tls" ] && [ ! -r "$tls" ]; then
  echo "remsh: --tls $tls: no such readable file" >&2
  exit 2
fi
host=${target#*@}
# Long names when the host has a dot or is an IP address, as erl does.
if [[ "$host" == *.* || "$host" == *:* ]]; then namearg=-name; self="remsh_$$@$host"; else namearg=-sname; self="remsh_$$"; fi
exec erl -pa "$KTLS_EBIN" -proto_dist "$carrier" "${tlsargs[@]}" \
  -epmd_module ktls_filter_epmd -start_epmd false -dist_listen false -hidden \
  $namearg "$self" -setcookie "$cookie" \
  -ktls_filter_peer "$target" "$port" \
  -remsh "$target"
