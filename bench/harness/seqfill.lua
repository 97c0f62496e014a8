-- wrk script for bench/bench.sh's Zipf fill: GET <prefix><id> for id = START,
-- START+1, ... N-1, then id 0 over and over (a hit), in the order of request().
--
--   wrk -t1 -c64 -d10s -s seqfill.lua URL -- START N PREFIX
--
-- The harness runs it again from START + (requests answered) until every id
-- was requested once: a run cut short by -d leaves no gap (what was sent
-- but not answered is sent again by the next run).
local id, n, prefix

function init(args)
  id = tonumber(args[1] or "0")
  n = tonumber(args[2] or "1000")
  prefix = args[3] or "/api/v1/tasks/"
  wrk.headers["Accept"] = "application/json"
end

function request()
  local r
  if id < n then r = wrk.format("GET", prefix .. id) else r = wrk.format("GET", prefix .. "0") end
  id = id + 1
  return r
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
