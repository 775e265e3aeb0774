#!/usr/bin/env bash
# Side by side, in interleaved rounds: evloop echo with 1 loop, 2 loops, and
# 1 loop with an idle timeout armed (timers must cost nothing per event).
# The load generator shares the machine's cores with the server (2 cores
# here): figures are honest for this machine only; compare the ratios.
#
#   bash bench/scripts/loops.sh [ROUNDS] [DURATION] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
duration=${2:-3s}
connections=${3:-100}
cargo build -q --release -p evloop-cli
bin=target/release/evloop
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # label, serve args...
  local label=$1; shift
  local log; log=$(mktemp)
  "$bin" serve echo --listen 127.0.0.1:0 "$@" 2>"$log" &
  local pid=$!
  local port=""
  for _ in $(seq 100); do
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | head -1 | grep -o '[0-9]*$' || true)
    [ -n "$port" ] && break
    sleep 0.05
  done
  local before; before=$(cpu_ticks "$pid")
  local json; json=$("$bin" bench echo --target "127.0.0.1:$port" --connections "$connections" \
    --size 128 --duration "$duration" --threads 2 --json)
  local after; after=$(cpu_ticks "$pid")
  kill -TERM "$pid"; wait "$pid" || true
  rm -f "$log"
  python3 - "$label" "$json" "$before" "$after" "$ticks" <<'PY'
import json, sys
label, report, before, after, ticks = sys.argv[1], json.loads(sys.argv[2]), *map(int, sys.argv[3:])
total = report.get("requests_total") or report["requests"]
cpu = (after - before) / ticks
print(f"{label}\t{report['requests_per_sec']:.0f}\t{cpu / total * 1e6:.2f}\t{report['mismatches']}")
PY
}

results=$(mktemp)
for round in $(seq "$rounds"); do
  run "1-loop" --threads 1 >>"$results"
  run "2-loops" --threads 2 >>"$results"
  run "1-loop+idle-timeout" --threads 1 --idle-timeout 60s >>"$results"
done
python3 - "$results" "$rounds" "$duration" "$connections" <<'PY'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
print(f"evloop echo, {sys.argv[4]} connections x 128 B, {sys.argv[2]} interleaved rounds of {sys.argv[3]}, load generator 2 threads")
print(f"{'config':<22}{'median req/s':>14}{'ratio':>8}{'server CPU us/req':>20}{'mismatches':>12}")
base = None
for label in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == label]
    rps = statistics.median(float(r[1]) for r in mine)
    cpu = statistics.median(float(r[2]) for r in mine)
    base = base or rps
    print(f"{label:<22}{rps:>14,.0f}{rps / base:>8.2f}{cpu:>20.2f}{sum(int(r[3]) for r in mine):>12}")
PY
rm -f "$results"
