#!/usr/bin/env bash
# Fuzzes evloop-http's connection handler (target http_connection) with
# nightly cargo-fuzz, then says how many runs it made and what it found.
#
#   bash http/fuzz/run.sh [SECONDS | -runs=N] [libFuzzer options...]
#
# SANITIZER=leak runs under LeakSanitizer alone instead of AddressSanitizer:
# leaks are still caught, and it runs some 15 times faster here (the target
# is safe Rust; ASan's extra checks guard little): for long campaigns.
#
# Default: 60 seconds. Needs `rustup toolchain install nightly` and
# `cargo install cargo-fuzz --locked` (.ci/run installs both). New inputs
# go to corpus/http_connection/ beside the committed seeds (seed-*, the
# only ones git keeps); a crash is written to artifacts/http_connection/
# and makes the script fail. Leaks fail too (AddressSanitizer's leak check).
set -euo pipefail
cd "$(dirname "$0")"

limit=${1:-60}
(($#)) && shift
case $limit in
  -runs=[0-9]*) budget=$limit ;;
  *[!0-9]* | '') echo "usage: run.sh [SECONDS | -runs=N] [libFuzzer options...]" >&2; exit 2 ;;
  *) budget=-max_total_time=$limit ;;
esac

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Inputs up to 16 KiB: past a request head's limit (8 KiB), so 414 and
# 431 are reachable. 2 GiB of memory at most: a bound, not a need.
cargo +nightly fuzz run --sanitizer "${SANITIZER:-address}" http_connection corpus/http_connection -- \
  "$budget" -max_len=16384 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@" \
  2>&1 | tee "$log" || status=$?

runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
crashes=$(grep -c 'Test unit written to' "$log" || true)
echo "http_connection: ${runs:-?} runs, exit status $status"
if ((status != 0)); then
  grep -E 'Test unit written to|^SUMMARY' "$log" || true
  echo "http_connection: the fuzzer failed (a crash, a leak or a timeout: see above)"
  exit 1
fi
((crashes == 0)) || { echo "http_connection: $crashes crash reports"; exit 1; }
echo "http_connection: no crash, no leak"
