#!/usr/bin/env bash
# Fuzzes the PROXY protocol parser and layer (target proxy_header) with
# nightly cargo-fuzz; fails on a crash, a leak or a timeout.
#
#   bash evloop/fuzz/run.sh [SECONDS | -runs=N] [libFuzzer options...]
#
# Default: 30 seconds, under AddressSanitizer (SANITIZER=leak for long
# campaigns, as http/fuzz/run.sh explains). Needs the nightly toolchain and
# cargo-fuzz (.ci/run installs both). New inputs go to corpus/proxy_header/
# beside the committed seeds (seed-*); a crash goes to artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

limit=${1:-30}
(($#)) && shift
case $limit in
  -runs=[0-9]*) budget=$limit ;;
  *[!0-9]* | '') echo "usage: run.sh [SECONDS | -runs=N] [libFuzzer options...]" >&2; exit 2 ;;
  *) budget=-max_total_time=$limit ;;
esac

# Inputs up to 6 KiB: past the 4 KiB limit on v2 headers the target sets.
cargo +nightly fuzz run --sanitizer "${SANITIZER:-address}" proxy_header corpus/proxy_header -- \
  "$budget" -max_len=6144 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@"
echo "proxy_header: no crash, no leak"
