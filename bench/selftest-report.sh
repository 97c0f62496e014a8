#!/usr/bin/env bash
# bench/selftest-report.sh - `cachegate selftest` against `cachegate demo`,
# with its HTML report opened in headless Chromium.
#
# Builds cachegate (release), starts `cachegate demo` on a free port, runs the
# selftest line the demo prints with --html (the report embeds its JSON), then
# bench/harness/check_report.py loads the report in headless Chromium and
# checks that both plots rendered (the DOM Chromium built, and the colours in
# a screenshot). Prints the selftest table, the figures and what Chromium
# showed.
#
#   bench/selftest-report.sh
#   CACHEGATE_BIN=target/release/cachegate bench/selftest-report.sh   # skip the build
#   REQUESTS=5000 CONCURRENCY=32 bench/selftest-report.sh
#
# Knobs (environment), defaults in brackets:
#   CACHEGATE_BIN  use this binary, skip `cargo build --release`
#   OUT            where the report, JSON, screenshot and demo log go [bench/run/selftest-<ts>]
#   REQUESTS [2000]  CONCURRENCY [16]   selftest's --requests and --concurrency
#   REDIS_URL      when set, the demo caches in that Redis instead of memory
#
# Needs: a Rust toolchain (unless CACHEGATE_BIN), python3, and Chromium
# (Debian: apt-get install -y chromium; installed here when missing and
# apt-get is there).
#
# Exit status: 0 when the selftest passed and both plots rendered; 1 when the
# selftest failed a check or a plot did not render; 2 when something could
# not start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
REQUESTS=${REQUESTS:-2000}
CONCURRENCY=${CONCURRENCY:-16}
OUT=${OUT:-$REPO/bench/run/selftest-$(date +%Y%m%d-%H%M%S)}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

command -v python3 >/dev/null || die "python3 is needed"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing chromium (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || die "apt-get install chromium failed"
  else
    die "chromium is needed (Debian: apt-get install -y chromium)"
  fi
fi

if [[ -n ${CACHEGATE_BIN:-} ]]; then
  BIN=$CACHEGATE_BIN
  [[ -x $BIN ]] || die "CACHEGATE_BIN=$BIN is not an executable"
else
  log "building cachegate (cargo build --release)"
  cargo build --release --quiet || die "the build failed"
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  BIN=$TARGET_DIR/release/cachegate
fi
mkdir -p "$OUT"

# A free port for the demo's proxy.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

DEMO_PID=
cleanup() {
  if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DEMO_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

STORE=memory
[[ -z ${REDIS_URL:-} ]] || STORE=redis
log "starting cachegate demo on 127.0.0.1:$PORT (store: $STORE)"
env -u CACHEGATE_ADMIN_TOKEN RUST_LOG=warn "$BIN" demo --listen "127.0.0.1:$PORT" >"$OUT/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 100); do
  grep -q 'Press Ctrl-C' "$OUT/demo.log" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$OUT/demo.log" >&2; die "the demo stopped"; }
  sleep 0.1
done
grep -q 'Press Ctrl-C' "$OUT/demo.log" || die "the demo did not print its banner within 10 s"

LINE=$(grep -m1 '^ *cachegate selftest ' "$OUT/demo.log" | sed 's/^ *cachegate selftest //')
[[ -n $LINE ]] || die "no selftest line in the demo's banner ($OUT/demo.log)"
echo "demo's selftest line: cachegate selftest $LINE" | sed -E 's/(--(admin-)?token) [^ ]+/\1 <redacted>/g'
# The line is shell words (single-quoted templates): let the shell split it.
eval "ARGS=($LINE)"

log "running the selftest ($REQUESTS requests per phase, $CONCURRENCY workers)"
set +e
"$BIN" selftest "${ARGS[@]}" --requests "$REQUESTS" --concurrency "$CONCURRENCY" \
  --html "$OUT/report.html" | tee "$OUT/selftest.txt"
SELFTEST=${PIPESTATUS[0]}
set -e
echo "selftest exit status: $SELFTEST"
[[ -s $OUT/report.html ]] || die "no HTML report written"

log "opening the report in headless Chromium"
set +e
python3 "$REPO/bench/harness/check_report.py" "$OUT/report.html" --screenshot "$OUT/report.png"
RENDER=$?
set -e
echo "report: $OUT/report.html  screenshot: $OUT/report.png"
((RENDER == 2)) && exit 2
((SELFTEST == 0 && RENDER == 0)) || exit 1
echo "selftest-report: ok"
