#!/usr/bin/env bash
# cachegate as one more row of the shared peers benchmark (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/bench-peers/peers.sh}
[ -x "$PEERS" ] || PEERS="bash $PEERS"
cargo build --release -q
RUN=${BENCH_RUN_DIR:-/tmp/cachegate-bench-peers}
mkdir -p "$RUN"
CONF="$RUN/tasks.toml"
cp bench/tasks.toml "$CONF"
if [ "${TIER:-1}" = 0 ]; then sed -i 's/^enabled = true/enabled = false/' "$CONF"; fi
# Our own Redis DB (the harness keeps DB 0 for the in-app decorator row).
export OURS="env CACHEGATE_LISTEN=127.0.0.1:{port} CACHEGATE_BACKEND={backend} REDIS_URL=redis://127.0.0.1:{redis_port}/3 $PWD/target/release/cachegate --config $CONF --log warn"
export OURS_LABEL="cachegate hit (tier ${TIER:-1})"
export OURS_HIT_HEADER=x-cache
export BENCH_RUN_DIR="$RUN"
export RESULTS=${RESULTS:-$RUN/RESULTS.md}
$PEERS
echo "results: $RESULTS"
