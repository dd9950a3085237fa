-- Shared by every bench script (bench/wrk.py prepends it): thread ids, the API key, pacing, the summary.
local thread_count = 0
setup = function(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

local function env_number(name, default)
   local value = os.getenv(name)
   if value == nil or value == "" then return default end
   return tonumber(value)
end

api_key = os.getenv("BENCH_API_KEY")
json_headers = {["Content-Type"] = "application/json"}
get_headers = {}
if api_key ~= nil and api_key ~= "" then
   json_headers["X-API-Key"] = api_key
   get_headers["X-API-Key"] = api_key
end

function read_lines(path)
   local lines = {}
   for line in io.lines(path) do
      if line ~= "" then lines[#lines + 1] = line end
   end
   return lines
end

-- Pacing for the latency-against-load curve: each connection waits an exponentially distributed time
-- between requests, so the offered rate is about BENCH_RATE over all connections (0: as fast as possible).
local rate = env_number("BENCH_RATE", 0)
local connections = env_number("BENCH_CONNECTIONS", 1)
if rate > 0 then
   local mean_ms = connections / rate * 1000
   delay = function()
      return -math.log(1 - math.random()) * mean_ms
   end
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
      latency.max, latency.mean))
end
