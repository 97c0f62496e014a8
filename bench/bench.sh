#!/usr/bin/env bash
# bench/bench.sh - cachegate's own benchmark (see bench/README.md).
#
# Builds cachegate in release mode, then, with every server process pinned to
# one core and the load generator to another, measures in interleaved rounds:
# the FastAPI backend direct, nginx proxy_cache hits, cachegate hits with and
# without its in-process tier, the in-app Redis decorator, cachegate and nginx
# pass-through, and cachegate's rows again with the access log on as shipped
# (cg-tier-log, cg-redis-log, cg-pass-log), and hits over TLS and HTTP/2 beside
# nginx configured the same way (cg-tls, cg-h2, cg-h2c; nginx-tls, nginx-h2,
# nginx-h2c); then cachegate's memory (tier at
# its bound, 1 GiB streamed through), the cross-instance staleness window of
# the tier, the PUT cost over a million Redis entries, and the scaling figures
# (1/64/512 connections, 1 KiB/16 KiB/256 KiB bodies, a Zipf working set 10x
# the tier over a million ids, and a projection of the cores and Redis shards
# 1 M req/s at 95 % hits would need). Prints the table, issue 18's targets
# (log off and on; new and baseline binary) and the extra figures, and writes
# them to $RESULTS.
#
#   bench/bench.sh                                  # full run: ~4.5 min build + ~3 min measuring
#   CACHEGATE_BIN=target/release/cachegate bench/bench.sh   # skip the build
#   BASELINE_BIN=/path/to/old/cachegate ONLY=cg-tier,cg-tier-base,cg-redis,cg-redis-base \
#     SKIP=memory,stream,stale,purge,scaling bench/bench.sh    # new binary vs a baseline
#   CACHEGATE_BIN=target/release/cachegate BASELINE_BIN=/path/to/old/cachegate bench/bench.sh
#                                                   # every figure of issue 18, old and new side by side (~15 min)
#   ROUNDS=1 DURATION=2 RESULTS=/tmp/smoke.md bench/bench.sh  # smoke run
#   ROUNDS=1 DURATION=2 ZIPF_IDS=100000 PURGE_ENTRIES=100000 RESULTS=/tmp/smoke.md bench/bench.sh  # quicker
#
# Needs: Debian's wrk, nginx, redis-server (with redis-cli), nghttp2-client
# (h2load) and openssl, plus curl, taskset, setsid and python3 with venv (its backend's packages come from PyPI the first
# time, into bench/run/venv). Two CPUs or more.
#
# Knobs (environment), defaults in brackets:
#   CACHEGATE_BIN      use this binary, skip `cargo build --release`
#   BASELINE_BIN       a baseline cachegate binary (e.g. built from the commit before a
#                      change): adds the rows cg-tier-base, cg-redis-base, cg-pass-base
#                      (and cg-tier-log-base, cg-redis-log-base, cg-pass-log-base), the
#                      same instances run from it, right after their twins in every round,
#                      and a baseline instance in the PUT measurement (direct / new /
#                      baseline PUTs in rotating order); the Targets table shows the
#                      baseline's figure beside the new one, plus new ÷ baseline req/s
#   RESULTS            markdown results file [bench/RESULTS.md]
#   ROUNDS [3]  DURATION (s per wrk run) [5]  THREADS [1]  CONNS [64]
#   WORKING_SET [1000]  TASKS [10000]  DB_LATENCY_MS [2]
#   SERVER_CPU [0]  LOADGEN_CPU [1]  PORT_BASE [19000] (uses PORT_BASE..PORT_BASE+84)
#   PUTS [300]  STALE_TRIALS [200]  PURGE_ENTRIES [1000000]  STREAM_MB [1024]
#   TIER_FILL_MB [96]   ONLY=row,row (matrix rows, e.g. cg-tier,cg-tier-log,nginx-hit)
#   SKIP=matrix,memory,stream,stale,purge,scaling (sections), accesslog (the cg-*-log rows),
#        protocols (the TLS and HTTP/2 rows: cg-tls, cg-h2, cg-h2c beside nginx-tls, nginx-h2,
#        nginx-h2c; e.g. ONLY=cg-tls,nginx-tls,cg-h2,nginx-h2,cg-h2c,nginx-h2c runs them alone)
#   H2_CONNS [8]  H2_STREAMS [8]  (h2load's connections and streams per connection)
#        zipf (the Zipf part of scaling: its fill of ZIPF_IDS misses takes ~2.5 min at 1 M)
#   scaling: SCALE_CONNS [1,64,512]  BODY_SIZES [1024,16384,262144] (bytes)  BODY_IDS [100]
#     SCALE_ROUNDS [1]  ZIPF_IDS [1000000]  ZIPF_S [1.0]  ZIPF_TASK_BYTES [600]
#     ZIPF_TIER_DIV [10] (tier max_bytes = ZIPF_IDS x ZIPF_TASK_BYTES / this)
#     PROJ_RPS [1000000]  PROJ_HIT [0.95] (the capacity projection's rate and hit rate)
#   VENV [bench/run/venv]
#
# Exit status: 0 when every part ran without errors (targets missed or not:
# this is a benchmark, not a test); 1 when a part failed, wrk saw errors or a
# response did not match the backend's (the results file says which); 2 when
# it could not start (a port taken, a daemon that did not come up).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BENCH=$REPO/bench
T_START=$(date +%s)
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
RESULTS=${RESULTS:-$BENCH/RESULTS.md}
VENV=${VENV:-$BENCH/run/venv}
export SERVER_CPU LOADGEN_CPU

# ---------------------------------------------------------------- prerequisites
missing=()
for c in wrk h2load openssl nginx redis-server redis-cli taskset setsid curl python3; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
if ((${#missing[@]})); then
  die "missing: ${missing[*]}. On Debian/Ubuntu: apt-get install -y wrk nghttp2-client openssl nginx redis-server curl util-linux python3 python3-venv"
fi
(( $(nproc) >= 2 )) || die "need at least 2 CPUs (server on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 >= 3.9 needed"

# ---------------------------------------------------------------- build
if [[ -n ${CACHEGATE_BIN:-} ]]; then
  BIN=$(readlink -f "$CACHEGATE_BIN")
  [[ -x $BIN ]] || die "CACHEGATE_BIN=$CACHEGATE_BIN is not an executable"
  log "using $BIN (no build)"
else
  command -v cargo >/dev/null || die "cargo not found (or set CACHEGATE_BIN to a built cachegate)"
  log "building cachegate (cargo build --release; ~4.5 min from scratch on 2 cores)"
  cargo build --release
  BIN=$REPO/target/release/cachegate
fi

BASELINE_ARGS=()
if [[ -n ${BASELINE_BIN:-} ]]; then
  BASE=$(readlink -f "$BASELINE_BIN")
  [[ -x $BASE ]] || die "BASELINE_BIN=$BASELINE_BIN is not an executable"
  log "baseline binary: $BASE (rows cg-tier-base, cg-redis-base, cg-pass-base, cg-*-log-base; PUT via cg-purge-base)"
  BASELINE_ARGS=(--baseline-bin "$BASE")
fi

# ---------------------------------------------------------------- backend venv (reused across runs)
mkdir -p "$BENCH/run"
REQ=$BENCH/harness/requirements.txt
STAMP=$VENV/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || $(cat "$STAMP" 2>/dev/null) != "$want" ]] ||
   ! "$VENV/bin/python" -c 'import fastapi, uvicorn, redis' 2>/dev/null; then
  log "creating the backend's venv in $VENV (PyPI)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
  "$VENV/bin/pip" install -q -r "$REQ"
  echo "$want" >"$STAMP"
fi

# ---------------------------------------------------------------- leftovers of a killed run
# A run killed with SIGKILL may leave daemons behind. Stop those only: a pid
# listed in an earlier run's pids file whose working directory is still that
# run's cwd/ folder (where every daemon is started).
alive() {
  local st
  st=$( (cut -d')' -f2 <"/proc/$1/stat" | cut -d' ' -f2) 2>/dev/null ) || return 1
  [[ -n $st && $st != Z ]]
}
stop_group() {   # TERM the process group led by $1, KILL after 5 s
  local pid=$1 i
  alive "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}
stop_listed() {  # stop_listed RUN_DIR: the daemons in its pids file that are still ours
  local dir=$1 pid name cwd
  [[ -f $dir/pids ]] || return 0
  while read -r pid name; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
    if [[ -n $cwd && $cwd == "$dir/cwd/"* ]]; then
      log "stopping $name (pid $pid) left by run $(basename "$dir")"
      stop_group "$pid"
    fi
  done < <(tac "$dir/pids")
}
for d in "$BENCH"/run/*/; do
  d=${d%/}
  [[ -f $d/pids ]] && stop_listed "$d"
done

# ---------------------------------------------------------------- run
RUN_DIR=$BENCH/run/$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN_DIR"
ln -sfn "$(basename "$RUN_DIR")" "$BENCH/run/last"
ORCH_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $ORCH_PID ]] && alive "$ORCH_PID"; then
    log "stopping the measurement (pid $ORCH_PID)"
    kill -TERM -- "-$ORCH_PID" 2>/dev/null || true
    for _ in $(seq 150); do alive "$ORCH_PID" || break; sleep 0.1; done   # it stops its daemons itself
    kill -KILL -- "-$ORCH_PID" 2>/dev/null || true
  fi
  stop_listed "$RUN_DIR"   # whatever it could not stop
  rm -f "$RUN_DIR/pids"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "run directory: $RUN_DIR"
# In the background + wait, so INT/TERM reach the trap at once; own session, so
# the cleanup can stop it with its children (wrk, curl) as one process group.
set +e
setsid taskset -c "$LOADGEN_CPU" python3 "$BENCH/harness/cgbench.py" --bin "$BIN" "${BASELINE_ARGS[@]}" \
  --backend-python "$VENV/bin/python" --run-dir "$RUN_DIR" --results "$RESULTS" </dev/null &
ORCH_PID=$!
wait "$ORCH_PID"
RC=$?
ORCH_PID=
set -e
if [[ -f $RESULTS && $RESULTS -nt $RUN_DIR/ids.txt ]]; then
  log "total wall time $(( $(date +%s) - T_START )) s (build and setup included); results: $RESULTS"
else
  log "no results written (exit status $RC); logs: $RUN_DIR/logs"
fi
exit "$RC"
