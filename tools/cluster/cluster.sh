#!/usr/bin/env bash
# ./ktls cluster up N [--plain] | down | status | run SCENARIO [ARG]
#
# N real BEAM nodes on 127.0.0.1 with -proto_dist ktls_filter: a full mesh,
# epmd-less (ktls_filter_epmd with a peers table), TLS with one certificate
# per node from a throwaway CA (--plain: no TLS). State (node list, pids,
# certificates, logs) lives in KTLS_CLUSTER_DIR (default _build/cluster).
# A controller (a hidden ktls_filter node with its own certificate, that
# does not listen) waits for the nodes, makes the mesh and runs scenarios:
#
#   traffic [SECONDS]   every node sends 256-byte messages to every other
#                       (default 10 s): msgs/s per node, all received
#   latency [COUNT]     ping-pong round trips between every pair (p50, p99)
#
# Every report ends with each node's memory, processes, connections, TLS
# (and whether the kernel carries it) and the filter's counters.
# `run` with no cluster up starts one of 3 nodes and always stops it again;
# `up` stops what it started when a node does not come up.
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls cluster}"
dir=${KTLS_CLUSTER_DIR:-$KTLS_ROOT/_build/cluster}
ebin=$KTLS_ROOT/_build/lib/ktls_filter/ebin
cebin=$dir/ebin

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "cluster: $*" >&2
  exit 1
}

is_up() { [ -s "$dir/pids" ]; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# erl for the controller: hidden, not listening, peers from ctl.conf.
controller() {
  erl -noshell -noinput -hidden -name "ctl_$$@127.0.0.1" -setcookie "$(cat "$dir/cookie")" \
    -pa "$ebin" -pa "$cebin" -proto_dist ktls_filter \
    -epmd_module ktls_filter_epmd -start_epmd false -dist_listen false \
    -ktls_filter_optfile "$dir/ctl.conf" \
    -run ktls_cluster_ctl main "$@"
}

down() {
  if [ -s "$dir/pids" ]; then
    local pids
    pids=$(cat "$dir/pids")
    # shellcheck disable=SC2086 # one pid per word
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      # shellcheck disable=SC2086
      kill -0 $pids 2>/dev/null || break
      sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    echo "cluster: stopped $(wc -w <<<"$pids") nodes"
  fi
  rm -f "$dir/pids" "$dir/nodes"
}

up() {
  local n=${1:-}
  shift || true
  if [ -z "$n" ]; then
    die "up N: how many nodes? (./ktls cluster up 5)"
  elif ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 2 ] || [ "$n" -gt 64 ]; then
    die "up N: N must be 2..64, got '${n}'"
  fi
  local plain=false
  [ "${1:-}" = --plain ] && plain=true
  is_up && die "a cluster is up already in $dir (./ktls cluster down)"
  mkdir -p "$dir" "$cebin"
  erlc -o "$cebin" +warnings_as_errors "$KTLS_ROOT/tools/cluster/ktls_cluster.erl" \
    "$KTLS_ROOT/tools/cluster/ktls_cluster_ctl.erl"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cookie"
  local names=() ports=() i
  for i in $(seq 1 "$n"); do
    names+=("node$i")
    ports+=("$(free_port)")
  done
  rm -rf "$dir/pki"
  if [ "$plain" = false ]; then
    "$KTLS_ROOT/tools/certs.sh" "$dir/pki" "${names[@]/%/@127.0.0.1}" ctl@127.0.0.1 >/dev/null
  fi
  local peers="" nodes=""
  for i in $(seq 0 $((n - 1))); do
    peers+="'${names[$i]}@127.0.0.1' => {\"127.0.0.1\", ${ports[$i]}}, "
    nodes+="'${names[$i]}@127.0.0.1'."$'\n'
  done
  peers="#{${peers%, }}"
  printf '%s' "$nodes" >"$dir/nodes"
  conf() { # name -> optfile with peers (and TLS)
    {
      echo "{peers, $peers}."
      if [ "$plain" = false ]; then cat "$dir/pki/$1.conf"; fi
    } >"$dir/$1.conf"
  }
  conf ctl
  : >"$dir/pids"
  trap 'down; exit 1' INT TERM
  for i in $(seq 0 $((n - 1))); do
    local name=${names[$i]}
    conf "$name"
    setsid erl -noshell -noinput -name "$name@127.0.0.1" -setcookie "$(cat "$dir/cookie")" \
      -pa "$ebin" -pa "$cebin" -proto_dist ktls_filter \
      -epmd_module ktls_filter_epmd -start_epmd false \
      -ktls_filter_port "${ports[$i]}" -ktls_filter_optfile "$dir/$name.conf" \
      -ktls_filter allow_mfa "[{ktls_cluster,'_','_'}]" \
      >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >>"$dir/pids"
  done
  if ! controller wait "$dir/nodes" 60; then
    echo "cluster: the nodes did not come up; their logs: $dir/node*.log" >&2
    tail -5 "$dir"/node*.log >&2 || true
    down
    exit 1
  fi
  echo "cluster: $n nodes ($([ "$plain" = true ] && echo plain || echo TLS)), state in $dir"
  trap - INT TERM
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  status)
    is_up || die "no cluster is up in $dir (./ktls cluster up N)"
    controller status "$dir/nodes"
    ;;
  run)
    scenario=${1:-}
    shift || true
    case "$scenario" in
      traffic) arg=${1:-10} ;;
      latency) arg=${1:-1000} ;;
      *) usage ;;
    esac
    if ! [[ "$arg" =~ ^[0-9]+$ ]] || [ "$arg" -eq 0 ]; then
      die "run $scenario: '$arg' is not a positive number"
    fi
    if ! is_up; then
      up 3
      trap 'down' EXIT
    fi
    controller "$scenario" "$dir/nodes" "$arg"
    ;;
  *) usage ;;
esac
