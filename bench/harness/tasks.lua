-- Copied unchanged from shared/bench-peers/tasks.lua (the shared peers harness).
-- wrk script for bench/peers.sh: GET /api/v1/tasks/{id} for ids drawn
-- uniformly at random from a working-set file (one id per line).
--
--   wrk -t2 -c64 -d10s --latency -s tasks.lua http://127.0.0.1:18080 -- ids.txt [prefix]
--
-- The request strings are pre-built once per thread in init(), so the
-- per-request Lua cost is one table lookup (keeps wrk off the critical path).
-- done() prints one machine-readable line, "WRKJSON {...}", which the harness
-- parses; latency figures are microseconds from wrk's histogram.

local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

local reqs = {}
local nreqs = 0

function init(args)
  local path = args[1] or "ids.txt"
  local prefix = args[2] or "/api/v1/tasks/"
  wrk.headers["Accept"] = "application/json"
  local f = assert(io.open(path, "r"), "cannot open id file " .. path)
  for line in f:lines() do
    local id = line:match("^%s*(%S+)%s*$")
    if id then
      nreqs = nreqs + 1
      reqs[nreqs] = wrk.format("GET", prefix .. id)
    end
  end
  f:close()
  assert(nreqs > 0, "empty id file " .. path)
  -- deterministic but distinct sequence per thread
  math.randomseed(1000 + (thread_id or 0) * 7919)
end

function request()
  return reqs[math.random(nreqs)]
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.6f,"rps":%.2f,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
