#!/usr/bin/env bash
# Scale-out behind HAProxy, shown and checked on one machine (loopback):
#
#   1. three `evloop serve echo --proxy-protocol` instances, each with its
#      metrics endpoint, behind Debian's haproxy (send-proxy-v2; health
#      checks on /ready, so a draining or dead instance leaves the pool);
#   2. `evloop bench echo` through HAProxy; mid-run one instance is killed
#      (SIGKILL): HAProxy marks it down and routes around it, no byte is
#      corrupted, and only the connections the killed instance held end;
#   3. `evloop serve log --proxy-protocol` behind HAProxy logs the client's
#      own ip:port, not HAProxy's.
#
# Usage: contrib/haproxy/scale-out.sh [EVLOOP]   (default: evloop on PATH)
# Needs haproxy, curl and socat. Prints what it saw; exits 0 only if every
# check held. Everything it starts is stopped at exit, by PID.
set -euo pipefail

evloop=${1:-evloop}
command -v "$evloop" >/dev/null || { echo "no evloop at '$evloop'"; exit 2; }
for tool in haproxy curl socat; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install $tool)"; exit 2; }
done

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAILED: $*"; exit 1; }

# Waits (up to 10 s) for a line matching $2 in file $1; prints its last word
# after "listening on".
address_in() {
  local log=$1 pattern=$2
  for _ in $(seq 200); do
    local addr
    addr=$(sed -n "s/.*$pattern \\([^ ]*\\).*/\\1/p" "$log" | head -n 1)
    if [[ -n $addr ]]; then echo "$addr"; return; fi
    sleep 0.05
  done
  cat "$log" >&2
  fail "no '$pattern' line in $log"
}

# Starts `evloop serve SERVICE --proxy-protocol` on free ports; sets
# $service_addr, $metrics_addr and appends its PID to pids.
start_instance() {
  local name=$1 service=$2
  "$evloop" serve "$service" --proxy-protocol --threads 2 \
    --listen 127.0.0.1:0 --metrics 127.0.0.1:0 2>"$dir/$name.log" &
  pids+=($!)
  service_addr=$(address_in "$dir/$name.log" "$service: listening on")
  metrics_addr=$(address_in "$dir/$name.log" "metrics: listening on")
}

# A gauge or counter from an instance's /metrics.
metric() {
  curl -sf "http://$1/metrics" | sed -n "s/^$2 \\([0-9]*\\)\$/\\1/p"
}

declare -a service metrics instance_pid
for i in 1 2 3; do
  start_instance "echo$i" echo
  service[i]=$service_addr
  metrics[i]=$metrics_addr
  instance_pid[i]=${pids[-1]}
  echo "instance e$i: pid ${instance_pid[i]}, echo on ${service[i]}, metrics on ${metrics[i]}"
done
start_instance log log
log_service=$service_addr
log_metrics=$metrics_addr

# HAProxy's frontends on free ports: bind, and try another port if taken.
config="$dir/haproxy.cfg"
for _ in $(seq 20); do
  front=$((20000 + RANDOM % 30000))
  log_front=$((front + 1))
  cat >"$config" <<EOF
global
  stats socket $dir/haproxy.sock mode 600 level admin

defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  # A connection refused by a dead instance is retried on another.
  retries 2
  option redispatch

frontend echo
  bind 127.0.0.1:$front
  default_backend evloop_echo

backend evloop_echo
  balance roundrobin
  # Ready means serving: a draining instance answers 503 and leaves the
  # pool before it stops accepting; a dead one fails the check.
  option httpchk GET /ready
  http-check expect status 200
  default-server send-proxy-v2 check inter 200ms fall 2 rise 2
  server e1 ${service[1]} check port ${metrics[1]##*:}
  server e2 ${service[2]} check port ${metrics[2]##*:}
  server e3 ${service[3]} check port ${metrics[3]##*:}

frontend log
  bind 127.0.0.1:$log_front
  default_backend evloop_log

backend evloop_log
  option httpchk GET /ready
  server l1 $log_service send-proxy-v2 check port ${log_metrics##*:} inter 200ms
EOF
  haproxy -c -q -f "$config" || fail "haproxy rejects the configuration"
  haproxy -db -f "$config" >"$dir/haproxy.log" 2>&1 &
  haproxy_pid=$!
  sleep 0.3
  if kill -0 "$haproxy_pid" 2>/dev/null; then
    pids+=("$haproxy_pid")
    break
  fi
  haproxy_pid=
done
[[ -n ${haproxy_pid:-} ]] || { cat "$dir/haproxy.log"; fail "haproxy did not start"; }
echo "haproxy: pid $haproxy_pid, echo on 127.0.0.1:$front, log on 127.0.0.1:$log_front"

# Server status by name, from HAProxy's stats socket (field 18 of show stat).
status_of() {
  echo "show stat" | socat stdio "unix-connect:$dir/haproxy.sock" |
    awk -F, -v backend="$1" -v server="$2" '$1 == backend && $2 == server { print $18 }'
}
wait_status() {
  for _ in $(seq 100); do
    [[ $(status_of "$1" "$2") == "$3" ]] && return
    sleep 0.1
  done
  fail "$1/$2 is $(status_of "$1" "$2"), not $3"
}
for i in 1 2 3; do wait_status evloop_echo "e$i" UP; done
wait_status evloop_log l1 UP
echo "haproxy: e1, e2, e3 and l1 are UP"

# The load: 60 connections through HAProxy for 4 s, every echoed byte
# checked. Mid-run, e2 is killed.
"$evloop" bench echo --target "127.0.0.1:$front" --connections 60 --duration 4s \
  --warmup 500ms --json >"$dir/bench.json" 2>"$dir/bench.log" &
bench=$!
pids+=("$bench")
for _ in $(seq 100); do
  held=$(metric "${metrics[2]}" evloop_connections_open)
  [[ ${held:-0} -gt 0 ]] && break
  sleep 0.05
done
sleep 1.5
held=$(metric "${metrics[2]}" evloop_connections_open)
before1=$(metric "${metrics[1]}" evloop_bytes_received_total)
before3=$(metric "${metrics[3]}" evloop_bytes_received_total)
kill -KILL "${instance_pid[2]}"
wait "${instance_pid[2]}" 2>/dev/null || true
echo "killed e2 (pid ${instance_pid[2]}) while it held $held of the 60 connections"
wait_status evloop_echo e2 DOWN
echo "haproxy: e2 is DOWN"
wait "$bench" || true
result=$(cat "$dir/bench.json")
field() { sed -n "s/.*\"$1\":\\([0-9.]*\\).*/\\1/p" <<<"$result"; }
io_errors=$(field io_errors)
echo "bench: $(field requests) requests at $(field requests_per_sec)/s; connect errors $(field connect_errors), i/o errors $io_errors, mismatches $(field mismatches)"
after1=$(metric "${metrics[1]}" evloop_bytes_received_total)
after3=$(metric "${metrics[3]}" evloop_bytes_received_total)

[[ $(field mismatches) == 0 ]] || fail "corrupted echoes"
[[ $(field connect_errors) == 0 ]] || fail "connections refused through HAProxy"
[[ $io_errors == "$held" ]] || fail "$io_errors connections ended, but e2 held $held"
((after1 > before1 && after3 > before3)) || fail "e1 or e3 stopped serving after e2 died"
wait_status evloop_echo e1 UP
wait_status evloop_echo e3 UP
echo "ok: only e2's $held connections ended; e1 and e3 went on serving; no byte corrupted"

# The log service sees the client, not HAProxy: a client from a chosen port.
source_port=$((20000 + RANDOM % 30000))
printf 'hello from the client\n' |
  socat -t 1 - "TCP:127.0.0.1:$log_front,bind=127.0.0.1:$source_port" >/dev/null
for _ in $(seq 100); do
  grep -q "connect 127.0.0.1:$source_port\$" "$dir/log.log" && break
  sleep 0.05
done
grep "127.0.0.1:$source_port" "$dir/log.log" || { cat "$dir/log.log"; fail "the log service did not log the client's 127.0.0.1:$source_port"; }
echo "ok: the log service behind HAProxy logged the client's own 127.0.0.1:$source_port"
echo "PASSED"
