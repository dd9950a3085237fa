-- Shared by every bench script (bench/wrk.py prepends it): thread ids, the API key, pacing, the summary.
local thread_count = 0
all_threads = {}
setup = function(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
   all_threads[#all_threads + 1] = thread
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

-- Pacing (BENCH_RATE > 0, for the p99 at a given load): open loop, in bench/lua/paced.lua, appended after
-- the scenario's script so it can wrap its request().
rate = env_number("BENCH_RATE", 0)
connections = env_number("BENCH_CONNECTIONS", 1)
threads = env_number("BENCH_THREADS", 1)

-- The latency percentiles: wrk's own (from each request's actual send), or when paced the open-loop ones
-- (from each request's scheduled send, bench/lua/paced.lua), gathered from every thread.
local function gathered(name)
   local all, sum = {}, 0
   for _, thread in ipairs(all_threads) do
      for _, us in ipairs(thread:get(name) or {}) do
         all[#all + 1] = us
         sum = sum + us
      end
   end
   table.sort(all)
   return all, sum
end

local function at(sorted, q)
   if #sorted == 0 then return 0 end
   return sorted[math.max(1, math.ceil(#sorted * q / 100))]
end

local function percentiles(latency)
   if rate <= 0 then
      return latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
         latency.max, latency.mean
   end
   local all, sum = gathered("paced_latencies_us")
   if #all == 0 then return 0, 0, 0, 0, 0, 0 end
   return at(all, 50), at(all, 90), at(all, 95), at(all, 99), all[#all], sum / #all
end

done = function(summary, latency, requests)
   local e = summary.errors
   local p50, p90, p95, p99, max, mean = percentiles(latency)
   local late = rate > 0 and gathered("paced_timer_late_us") or {}
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d,"mean":%.1f},"open_loop":%s,' ..
      '"pacer_late_us":{"p50":%d,"p99":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      p50, p90, p95, p99, max, mean, rate > 0 and "true" or "false", at(late, 50), at(late, 99)))
end
