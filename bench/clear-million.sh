#!/usr/bin/env bash
# Times the admin clear over a large keyspace and reports Redis's slowest
# command during it (SLOWLOG), on a private redis-server.
#
#   bench/clear-million.sh            # 1,000,000 entries (default)
#   N=200000 bench/clear-million.sh
#   CACHEGATE_BIN=target/release/cachegate bench/clear-million.sh   # skip the build
#
# bench/bench.sh measures the same (and a PUT's purge cost) as part of its run.
#
# Needs: redis-server, redis-cli, curl, python3 (Debian: apt-get install -y redis-server curl).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
FOREIGN=${FOREIGN:-1000}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port)
PPORT=$(free_port)
BPORT=$(free_port)
WORK=$(mktemp -d)
cleanup() {
    [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null || true
    redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${CACHEGATE_BIN:-}" ]; then BIN=$(readlink -f "$CACHEGATE_BIN"); else cargo build --release -q; BIN=$PWD/target/release/cachegate; fi
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$WORK" --logfile "$WORK/redis.log" --slowlog-log-slower-than 1000 --slowlog-max-len 1024
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done

echo "filling $N entries (cachegate layout) and $FOREIGN foreign keys..."
python3 bench/harness/fillresp.py "$N" "$FOREIGN" | redis-cli -p "$RPORT" --pipe >/dev/null
echo "keys in Redis: $(redis-cli -p "$RPORT" dbsize)"

TOKEN=$("$BIN" token | sed -n 's/^token: //p')
HASH=$("$BIN" token --hash "$TOKEN" | sed -n 's/^sha256 = "\(.*\)"/\1/p')
cat > "$WORK/proxy.toml" <<TOML
edition = "business"
[server]
listen = "127.0.0.1:$PPORT"
[backend]
url = "http://127.0.0.1:$BPORT"
[redis]
url = "redis://127.0.0.1:$RPORT/0"
[[admin.tokens]]
name = "bench"
sha256 = "$HASH"
scopes = ["purge"]
TOML
"$BIN" --config "$WORK/proxy.toml" --log warn &
PROXY_PID=$!
until curl -s "127.0.0.1:$PPORT/healthz" >/dev/null; do sleep 0.1; done
redis-cli -p "$RPORT" slowlog reset >/dev/null

start=$(date +%s.%N)
body=$(curl -s -X DELETE -H "Authorization: Bearer $TOKEN" "127.0.0.1:$PPORT/api/v1/cache/clear?pattern=task:*")
end=$(date +%s.%N)
echo "clear answered: $body"
python3 -c "print('clear of $N entries took %.2f s' % ($end - $start))"
echo "keys left: $(redis-cli -p "$RPORT" dbsize) (the $FOREIGN foreign keys and cachegate's own bookkeeping)"
echo "slowest Redis commands during the clear (SLOWLOG, threshold 1 ms):"
redis-cli -p "$RPORT" --json slowlog get 1024 2>/dev/null | python3 -c '
import json, sys
entries = json.load(sys.stdin) or []
entries.sort(key=lambda e: -e[2])
for e in entries[:5]:
    print("  %6d us  %s" % (e[2], " ".join(str(a) for a in e[3][:4])))
if not entries:
    print("  none over 1 ms")'
