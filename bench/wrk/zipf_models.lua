-- POST one JSON body (from the file named by $WRK_BODY) to /api/v2/models/<m>/infer,
-- the model drawn for every request from a Zipf law over the comma-separated names in
-- $WRK_MODELS (the first is the most popular), exponent $WRK_ZIPF_S (default 1.0):
-- P(rank k) ~ 1 / k^s. Prints the same WRK_JSON line as post_json.lua for
-- bench/many_models.py to parse.

local path = os.getenv("WRK_BODY")
if path == nil then
  error("set WRK_BODY to the file holding the request body")
end
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

local names = {}
for name in string.gmatch(os.getenv("WRK_MODELS") or "", "[^,]+") do
  table.insert(names, name)
end
if #names == 0 then
  error("set WRK_MODELS to the comma-separated model names")
end
local s = tonumber(os.getenv("WRK_ZIPF_S") or "1.0")
local cdf = {}
local total = 0
for k = 1, #names do
  total = total + 1 / (k ^ s)
  cdf[k] = total
end
for k = 1, #names do
  cdf[k] = cdf[k] / total
end

local headers = {["Content-Type"] = "application/json"}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  math.randomseed(os.time())
end

function request()
  local u = math.random()
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("POST", "/api/v2/models/" .. names[lo] .. "/infer", headers, body)
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
