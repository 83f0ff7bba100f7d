-- POST one JSON body (read from the file named by $WRK_BODY) on every request.
--
-- Counts responses outside 200-299 per thread and, when the run ends, prints one line
--   WRK_JSON {...}
-- with requests, duration, latency percentiles (microseconds), socket errors and the
-- non-2xx count, for bench/http.py to parse. wrk's own report (with --latency) is printed
-- above it unchanged.
--
-- $WRK_AUTHORIZATION, when set, is sent as the Authorization header of every request
-- (the router path's bearer token).

local path = os.getenv("WRK_BODY")
if path == nil then
  error("set WRK_BODY to the file holding the request body")
end
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local authorization = os.getenv("WRK_AUTHORIZATION")
if authorization ~= nil and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"non2xx":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status, bad))
end
