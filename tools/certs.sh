#!/usr/bin/env bash
# ./ktls certs DIR [NAME@HOST...]: a throwaway CA and one certificate per
# node, made with the openssl command; for tests, the demo and trying TLS.
#
# For every NAME@HOST it writes DIR/NAME.pem (certificate), DIR/NAME.key
# and DIR/NAME.conf, an options file in OTP's -ssl_dist_optfile format
# ([{server, Opts}, {client, Opts}]) that works the same with
# `-proto_dist inet_tls -ssl_dist_optfile F' and
# `-proto_dist ktls_filter -ktls_filter_optfile F'. The certificate's CN is
# NAME@HOST; its subjectAltName is HOST (a DNS name, and for an IP also
# the IP address), so the node-name binding (verify_node_name) accepts it
# for nodes on HOST. DIR/ca.pem and
# DIR/ca.key are made once and reused. Without names: node@127.0.0.1.
#
# KTLS_CERTS_VERSIONS="'tlsv1.3'" puts {versions, ['tlsv1.3']} into the
# option files (default: no versions entry; inet_tls_dist then speaks
# TLS 1.2 only, ktls_filter 1.2 and 1.3). KTLS_CERTS_DAYS sets the
# validity in days (default 30).
set -euo pipefail
dir=${1:?usage: ./ktls certs DIR [NAME@HOST...]}
shift
[ $# -eq 0 ] && set -- node@127.0.0.1
days=${KTLS_CERTS_DAYS:-30}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
command -v openssl >/dev/null || {
  echo "certs: the openssl command is missing (apt-get install openssl)" >&2
  exit 1
}
if [ ! -s "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=ktls_filter throwaway CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
fi
for node in "$@"; do
  name=${node%@*}
  host=${node#*@}
  if [ "$name" = "$node" ] || [ -z "$name" ] || [ -z "$host" ]; then
    echo "certs: '$node' is not NAME@HOST" >&2
    exit 2
  fi
  # An IP host is also a DNS name: inet_tls_dist's hostname check looks
  # for the host as given in the node name among the DNS names.
  case "$host" in
    *[!0-9.]*) san="DNS:$host" ;;
    *) san="IP:$host,DNS:$host" ;;
  esac
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$node" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  ext=$(mktemp)
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$ext" "$dir/$name.csr"
  versions=""
  [ -n "${KTLS_CERTS_VERSIONS:-}" ] && versions=", {versions, [${KTLS_CERTS_VERSIONS}]}"
  common="{certfile, \"$dir/$name.pem\"}, {keyfile, \"$dir/$name.key\"}, {cacertfile, \"$dir/ca.pem\"}, {verify, verify_peer}$versions"
  cat >"$dir/$name.conf" <<EOF
%% TLS options for $node (OTP's -ssl_dist_optfile format).
[{server, [$common, {fail_if_no_peer_cert, true}]},
 {client, [$common]}].
EOF
  echo "$dir/$name.conf"
done
