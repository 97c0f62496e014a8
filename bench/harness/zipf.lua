-- wrk script for bench/bench.sh's scaling figures: GET <prefix><id> for ids
-- 0..N-1 drawn from a Zipf distribution (rank r, probability ~ 1/r^s; id = r - 1).
--
--   wrk -t1 -c64 -d5s --latency -s zipf.lua http://127.0.0.1:19081 -- N S DRAWS PREFIX SEED
--
-- Everything is drawn in init(), per thread: the cumulative weights (N
-- numbers), then DRAWS ids by binary search, each turned into its request
-- string once (memoised per id); request() only walks that list, so the
-- per-request Lua cost is one table lookup, as in tasks.lua. The list is
-- replayed from the start when a run outlasts it.
-- done() prints the same "WRKJSON {...}" line as tasks.lua.

local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

local reqs = {}
local nreqs = 0
local pos = 0

function init(args)
  local n = tonumber(args[1] or "1000000")
  local s = tonumber(args[2] or "1.0")
  local draws = tonumber(args[3] or "262144")
  local prefix = args[4] or "/api/v1/tasks/"
  local seed = tonumber(args[5] or "1")
  wrk.headers["Accept"] = "application/json"
  local cum = {}
  local total = 0.0
  for r = 1, n do
    total = total + 1.0 / (r ^ s)
    cum[r] = total
  end
  math.randomseed(seed * 7919 + (thread_id or 0) * 104729)
  local memo = {}
  for i = 1, draws do
    local u = math.random() * total
    local lo, hi = 1, n
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cum[mid] < u then lo = mid + 1 else hi = mid end
    end
    local req = memo[lo]
    if not req then
      req = wrk.format("GET", prefix .. (lo - 1))
      memo[lo] = req
    end
    reqs[i] = req
  end
  nreqs = draws
  cum = nil
  collectgarbage()
end

function request()
  pos = pos + 1
  if pos > nreqs then pos = 1 end
  return reqs[pos]
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
