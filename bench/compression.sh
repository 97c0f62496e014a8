#!/usr/bin/env bash
# Redis memory saved by `[compression] encode` on the benchmark's JSON task
# bodies (bench/harness/compression.py): the same bodies bench/bench.sh's
# backend serves, filled through cachegate with encode off, gzip, br and
# zstd, each into a private redis-server on a free port (never 6379).
# Prints a Markdown table of MEMORY USAGE and used_memory deltas (and, with
# wrk installed, a rough hit throughput per mode).
#
#   bench/compression.sh                       # builds target/release/cachegate
#   CACHEGATE_BIN=target/debug/cachegate bench/compression.sh --tasks 500
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for c in redis-server redis-cli python3; do
  command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }
done
if [[ -z ${CACHEGATE_BIN:-} ]]; then
  cargo build --release
  CACHEGATE_BIN=target/release/cachegate
fi
exec python3 bench/harness/compression.py --bin "$CACHEGATE_BIN" "$@"
