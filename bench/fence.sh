#!/usr/bin/env bash
# What read-your-writes costs (ARCHITECTURE.md, "leases and fences"):
#  1. write latency through instance A, one instance and two sharing one
#     Redis, consistency "eventual" vs "read-your-writes": wrk -c1 PUTs,
#     p50/p99 from wrk --latency;
#  2. tier-hit throughput of A (with B running), both settings:
#     wrk -t1 -c32 GETs of one hot task, A pinned to one core.
# Rounds interleave the settings; medians are printed at the end.
# Loopback, a backend that answers at once (bench/harness/tinybackend.py).
#
# Needs: wrk, redis-server, taskset, python3, curl.
# Knobs: ROUNDS [3]  DURATION [5] (s per wrk run)  CONNS [32]  CORE [0]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
CORE=${CORE:-0}
cargo build --release -q
BIN=$PWD/target/release/cachegate
RUN=$(mktemp -d /tmp/cachegate-fence.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not up: $1" >&2; exit 1; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize no >/dev/null &
pids+=($!)
BACKEND_PORT=$(free_port)
python3 bench/harness/tinybackend.py "$BACKEND_PORT" &
pids+=($!)
sleep 0.5

conf() { # consistency
  cat <<TOML
[backend]
url = "http://127.0.0.1:$BACKEND_PORT"
[store]
kind = "redis"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
pool_size = 4
[tier]
enabled = true
consistency = "$1"
[access_log]
enabled = false
[[rule]]
name = "task"
methods = ["GET", "HEAD"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)\$'
key = "task:{task_id}"
ttl = 300
statuses = [200]
[[invalidate]]
name = "task-write"
methods = ["PUT"]
path = '^/api/v1/tasks/(?P<task_id>[^/]+)\$'
keys = ["task:{task_id}"]
TOML
}

# start NAME CONSISTENCY CORE: sets PORT
start() {
  PORT=$(free_port)
  conf "$2" > "$RUN/$1.toml"
  CACHEGATE_LISTEN=127.0.0.1:$PORT taskset -c "$3" "$BIN" --config "$RUN/$1.toml" --log warn \
    >"$RUN/$1.log" 2>&1 &
  pids+=($!)
  echo "$!" > "$RUN/$1.pid"
  wait_up "http://127.0.0.1:$PORT/healthz" || { cat "$RUN/$1.log" >&2; exit 1; }
}
# Waits until the instance on $1 answers a tier hit (tracking up and, for
# read-your-writes, a lease): writes before that wait out the fence.
wait_tier() {
  for _ in $(seq 200); do
    curl -s "http://127.0.0.1:$1/api/v1/tasks/warm" >/dev/null
    hits=$(curl -s "http://127.0.0.1:$1/metrics" | awk '$1=="cachegate_tier_hits_total" {print $2}')
    [ "${hits:-0}" != 0 ] && return 0
    sleep 0.05
  done
  echo "no tier hit on $1" >&2; exit 1
}
stop() { kill "$(cat "$RUN/$1.pid")" 2>/dev/null || true; wait "$(cat "$RUN/$1.pid")" 2>/dev/null || true; }

cat > "$RUN/put.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = '{"title":"x"}'
wrk.headers["Content-Type"] = "application/json"
LUA

# wrk --latency's 50% and 99% lines, in ms.
percentile() { awk -v p="$1" '$1==p { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } print v }'; }
median() { sort -g | awk '{a[NR]=$1} END { print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2) }'; }

declare -A results
for round in $(seq "$ROUNDS"); do
  for mode in eventual read-your-writes; do
    for n in 1 2; do
      start a "$mode" "$CORE"; a=$PORT
      if [ "$n" = 2 ]; then start b "$mode" 1; wait_tier "$PORT"; fi
      wait_tier "$a"
      out=$(wrk -t1 -c1 -d"$DURATION"s --latency -s "$RUN/put.lua" "http://127.0.0.1:$a/api/v1/tasks/1")
      p50=$(echo "$out" | percentile 50%); p99=$(echo "$out" | percentile 99%)
      results["put,$mode,$n,p50"]+="$p50 "; results["put,$mode,$n,p99"]+="$p99 "
      fences=$(curl -s "http://127.0.0.1:$a/metrics" | awk '$1 ~ /^cachegate_fence_(waits|peers_acked|peers_timed_out)_total$/ {printf "%s=%s ", substr($1,18), $2}')
      echo "round $round: PUT $mode, $n instance(s): p50 ${p50} ms p99 ${p99} ms ${fences}"
      if [ "$n" = 2 ]; then
        curl -s "http://127.0.0.1:$a/api/v1/tasks/1" >/dev/null
        curl -s "http://127.0.0.1:$a/api/v1/tasks/1" >/dev/null
        out=$(wrk -t1 -c"$CONNS" -d"$DURATION"s "http://127.0.0.1:$a/api/v1/tasks/1")
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        tier=$(curl -s "http://127.0.0.1:$a/metrics" | awk '$1=="cachegate_tier_hits_total" {print $2}')
        results["hit,$mode"]+="$rps "
        echo "round $round: GET tier hits $mode: $rps req/s (tier hits so far: $tier)"
        stop b
      fi
      stop a
    done
  done
done
echo
echo "medians over $ROUNDS rounds (A pinned to core $CORE):"
for mode in eventual read-your-writes; do
  for n in 1 2; do
    echo "  PUT $mode, $n instance(s): p50 $(echo ${results["put,$mode,$n,p50"]} | tr ' ' '\n' | median) ms, p99 $(echo ${results["put,$mode,$n,p99"]} | tr ' ' '\n' | median) ms"
  done
done
for mode in eventual read-your-writes; do
  echo "  tier hits $mode: $(echo ${results["hit,$mode"]} | tr ' ' '\n' | median) req/s"
done
