#!/usr/bin/env bash
# bench/chaos.sh - faults under load (see bench/README.md).
#
# Starts a private redis-server, a task API (bench/harness/taskapi.py, stdlib
# python, with a latency knob) and the release cachegate, puts ~2,000 req/s
# on it (mostly hits, every answer checked), and injects, one after the
# other, with CHAOS_PHASE_SECONDS of steady load around each:
#   1. Redis SIGKILLed for 5 s, restarted on the same port: zero client
#      errors; caching back within 1 s of Redis answering again;
#   2. Redis SIGSTOPped for 3 s, then SIGCONT: no request waits longer than
#      the store timeout + the backend's time; zero errors; caching resumes;
#   3. the backend SIGKILLed for 5 s: hits and stale-if-error entries still
#      served, uncached ids answered 502 JSON within the connect timeout,
#      back to 200 after the restart;
#   4. the backend slowed past timeout_ms for 5 s: 504 JSON at timeout_ms,
#      hits unaffected, the pool recovers.
# Prints each phase's figures and PASS/FAIL. About 2 minutes with the defaults.
#
#   bench/chaos.sh
#   CHAOS_RATE=1000 CHAOS_PHASE_SECONDS=5 bench/chaos.sh     # lighter, shorter
#   PHASES=2 bench/chaos.sh                                  # one phase only
#
# Knobs (environment), defaults in brackets:
#   CACHEGATE_BIN [target/release/cachegate; built with cargo build --release only when missing]
#   CHAOS_RATE (req/s) [2000]  CHAOS_CONNS [128]  CHAOS_PHASE_SECONDS [10]  PHASES [1,2,3,4]
#   REDIS_DOWN_SECONDS [5]  PAUSE_SECONDS [3]  BACKEND_DOWN_SECONDS [5]  SLOW_SECONDS [5]
#   STORE_TIMEOUT_MS [100]  BACKEND_TIMEOUT_MS [2000]  CONNECT_TIMEOUT_MS [1000]
#   SLOW_MS (added backend latency in phase 4) [BACKEND_TIMEOUT_MS + 500]  TIMEOUT_SLACK_MS [300]
#   RESUME_LIMIT_S [1.0]  HOT [1000]  SHORT_IDS [50]  SHORT_TTL [1]  STALE_IF_ERROR [60]
#   PROBE_RATE [20]  DB_LATENCY_MS [1]  PORT_BASE [19240] (redis, task API, cachegate on +0..+2)
#   SERVER_CPU (taskset the daemons) [unset]  ACCESS_LOG=1 (keep the build's access log; default off)
#
# Writes bench/run/chaos-<timestamp>/: summary.md, summary.json,
# records.csv.gz (every answer), probes.csv, cachegate.toml, logs/.
# Exit status 0 PASS, 1 FAIL, 2 could not start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
# shellcheck source=bench/harness/runlib.sh
source "$BENCH/harness/runlib.sh"
start_run chaos
log "run directory: $RUN_DIR"
run_orchestrator "$BENCH/harness/chaos.py"
