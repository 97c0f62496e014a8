#!/usr/bin/env bash
# bench/soak.sh - a long run at a steady moderate load (see bench/README.md).
#
# Starts a private redis-server, a task API (bench/harness/taskapi.py, stdlib
# python) and the release cachegate, then sends a steady mix of task GETs
# (working set and never-seen ids), list pages, PUTs and admin purges for
# DURATION seconds, checking every answer. Samples cachegate's RSS, VmHWM,
# open fds and threads every SAMPLE_SECONDS and judges at the end: RSS flat
# after the warm-up (growth < 10 %), fds not growing, zero errors.
#
#   bench/soak.sh                        # 30 min at 800 req/s
#   DURATION=60 bench/soak.sh            # smoke run
#   RATE=500 DURATION=3600 bench/soak.sh
#
# Knobs (environment), defaults in brackets:
#   CACHEGATE_BIN [target/release/cachegate; built with cargo build --release only when missing]
#   DURATION (s) [1800]  RATE (req/s) [800]  CONNS [32]  SAMPLE_SECONDS [30]  WARMUP_SECONDS [120]
#   HOT (working-set tasks) [1000]  TASK_TTL [120]  LIST_TTL [60]  SHORT_TTL [2]  DB_LATENCY_MS [1]
#   MIX [hot=68,cold=8,short=4,list=10,put=7,purge_key=2.5,purge_tag=0.5]
#   PORT_BASE [19200] (redis, task API, cachegate on PORT_BASE..+2)   SERVER_CPU (taskset the daemons) [unset]
#   RSS_GROWTH_LIMIT_PCT [10]  FD_SLACK [5]  ACCESS_LOG=1 (keep the build's access log; default off)
#
# Writes bench/run/soak-<timestamp>/: samples.csv, summary.md, summary.json,
# cachegate.toml, logs/. Exit status 0 PASS, 1 FAIL, 2 could not start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
# shellcheck source=bench/harness/runlib.sh
source "$BENCH/harness/runlib.sh"
start_run soak
log "run directory: $RUN_DIR"
run_orchestrator "$BENCH/harness/soak.py"
