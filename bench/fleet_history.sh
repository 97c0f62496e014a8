#!/usr/bin/env bash
# The longer variant of tests/it/fleet_history.rs: the same histories (two
# instances with tiers sharing one Redis; random and split routing; Redis
# paused, a peer paused, Redis restarted; and "eventual" for comparison),
# FLEET_OPS operations each (default 200,000), release build. Prints each
# run's operations, hits, tier hits, fence figures and stale reads.
#
#   bench/fleet_history.sh            # all runs
#   bench/fleet_history.sh eventual   # runs whose name starts so
set -euo pipefail
cd "$(dirname "$0")/.."
export FLEET_OPS=${FLEET_OPS:-200000}
# eventual_runs_no_fence does not fail on stale reads: it reports them.
# The runs are the fleet_history module of the `it` test binary.
filters=("fleet_history::")
if [ $# -gt 0 ]; then
  filters=()
  for name in "$@"; do filters+=("fleet_history::$name"); done
fi
cargo test --release --test it -- --nocapture --test-threads 1 "${filters[@]}" 2>&1 |
  grep -E '^\[|violation|^test |test result|panicked'
