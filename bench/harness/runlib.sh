# bench/harness/runlib.sh - sourced by bench/soak.sh and bench/chaos.sh.
#
# start_run NAME: cleans up what an earlier soak/chaos run killed with SIGKILL
#   left behind (only pids from its daemons.pids file whose working directory
#   is still that run's cwd/ folder, as bench.sh does; the file is not named
#   `pids` because bench.sh stops whatever bench/run/*/pids lists, a live
#   soak or chaos run included), makes bench/run/NAME-<ts>/ with
#   a copy of the cachegate binary ($BIN), sets RUN_DIR and RUN_BIN, installs
#   the cleanup trap.
# run_orchestrator SCRIPT: runs the python orchestrator in a session of its
#   own (so the trap can stop it with everything it started) and exits with
#   its status.

#
# On being sourced: log/die, the tools both scripts need, and $BIN (the
# release binary, built when missing; CACHEGATE_BIN to give another).

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

missing=()
for c in redis-server setsid python3; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian/Ubuntu: apt-get install -y redis-server util-linux python3)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 needed (asyncio.timeout)"

BIN=${CACHEGATE_BIN:-$REPO/target/release/cachegate}
if [[ ! -x $BIN ]]; then
  [[ -z ${CACHEGATE_BIN:-} ]] || die "CACHEGATE_BIN=$CACHEGATE_BIN is not an executable"
  command -v cargo >/dev/null || die "cargo not found (or set CACHEGATE_BIN)"
  log "building cachegate (cargo build --release)"
  cargo build --release
fi
BIN=$(readlink -f "$BIN")


alive() {
  local st
  st=$( (cut -d')' -f2 <"/proc/$1/stat" | cut -d' ' -f2) 2>/dev/null ) || return 1
  [[ -n $st && $st != Z ]]
}
stop_group() {   # CONT + TERM the process group led by $1, KILL after 5 s
  local pid=$1 i
  alive "$pid" || return 0
  kill -CONT -- "-$pid" 2>/dev/null || true
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}
stop_listed() {  # stop_listed RUN_DIR: the daemons in its daemons.pids file that are still ours
  local dir=$1 pid name cwd
  [[ -f $dir/daemons.pids ]] || return 0
  while read -r pid name; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
    if [[ -n $cwd && $cwd == "$dir/cwd/"* ]]; then
      log "stopping $name (pid $pid) left by run $(basename "$dir")"
      stop_group "$pid"
    fi
  done < <(tac "$dir/daemons.pids")
}

start_run() {
  local name=$1 d
  mkdir -p "$BENCH/run"
  for d in "$BENCH"/run/"$name"-*/; do
    d=${d%/}
    [[ -f $d/daemons.pids ]] || continue
    # a run still going (its orchestrator alive) is not a leftover
    if [[ -f $d/orchestrator.pid ]] && alive "$(cat "$d/orchestrator.pid")"; then continue; fi
    stop_listed "$d"
  done
  RUN_DIR=$BENCH/run/$name-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$RUN_DIR"
  ln -sfn "$(basename "$RUN_DIR")" "$BENCH/run/$name-last"
  # A copy: a rebuild of target/release meanwhile does not change what runs.
  cp "$BIN" "$RUN_DIR/cachegate"
  RUN_BIN=$RUN_DIR/cachegate
  { echo "source: $BIN"; sha256sum "$RUN_BIN"; echo "built: $(date -r "$BIN" '+%Y-%m-%d %H:%M:%S')"; "$RUN_BIN" --version; } \
    >"$RUN_DIR/binary.txt" 2>&1 || true
  ORCH_PID=
  trap _cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n ${ORCH_PID:-} ]] && alive "$ORCH_PID"; then
    log "stopping the run (pid $ORCH_PID)"
    kill -TERM -- "-$ORCH_PID" 2>/dev/null || true
    for _ in $(seq 200); do alive "$ORCH_PID" || break; sleep 0.1; done   # it stops its daemons itself
    kill -KILL -- "-$ORCH_PID" 2>/dev/null || true
  fi
  stop_listed "$RUN_DIR"   # whatever it could not stop
  rm -f "$RUN_DIR/daemons.pids" "$RUN_DIR/orchestrator.pid"
  exit "$rc"
}

run_orchestrator() {
  local script=$1 rc
  set +e
  setsid python3 "$script" --bin "$RUN_BIN" --run-dir "$RUN_DIR" </dev/null \
    > >(tee "$RUN_DIR/output.txt") 2> >(tee "$RUN_DIR/stderr.txt" >&2) &
  ORCH_PID=$!
  echo "$ORCH_PID" >"$RUN_DIR/orchestrator.pid"
  wait "$ORCH_PID"
  rc=$?
  ORCH_PID=
  set -e
  log "exit status $rc; run directory: $RUN_DIR"
  exit "$rc"
}
