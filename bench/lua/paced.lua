-- Open-loop pacing (BENCH_RATE > 0), appended after the scenario's script by bench/wrk.py. wrk (4.1, no
-- wrk2 in Debian) only offers delay(), a pause before each connection's next request: a closed loop, where
-- a slow answer postpones the requests that should have been sent meanwhile, so their wait is never
-- counted (coordinated omission). Here each connection (bench/wrk.py runs one per wrk thread, so the
-- thread's request(), response() and delay() are that connection's, in that order) follows its own
-- schedule: sends at exponentially distributed intervals of mean connections / BENCH_RATE, fixed in
-- advance; delay() waits until the next scheduled time (not at all if it has passed), and each latency
-- counts from the request's scheduled send time, not its actual one, on a monotonic clock (LuaJIT's FFI:
-- plain Lua has only os.clock, CPU time, and os.time, whole seconds). wrk's timers have 1 ms steps, so a
-- request goes out up to 1 ms after its time, and that counts in its latency.
if rate > 0 then
   if threads ~= connections then
      error("open-loop pacing needs one connection per thread (BENCH_THREADS = BENCH_CONNECTIONS)")
   end
   local ffi = require("ffi")
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clock, bench_timespec *now);
   ]]
   local clock = ffi.new("bench_timespec")
   local function now_us()
      ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
      return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
   end
   local mean_us = connections / rate * 1e6
   local scheduled, sent_for = nil, nil -- the next send time; the scheduled time of the request in flight
   paced_latencies_us = {}
   paced_timer_late_us = {} -- how late wrk's timer sent a request it had time to wait for: the pacer's own error
   local timed = false -- the request about to go was held back by delay() (its answer came in time)
   local scenario_request = request

   local seeded = false
   local function answered(now)
      paced_latencies_us[#paced_latencies_us + 1] = now - sent_for
      scheduled = sent_for - math.log(1 - math.random()) * mean_us
      sent_for = nil
   end

   request = function()
      if not seeded then -- each thread its own intervals (the scripts need not seed math.random)
         math.randomseed(os.time() * 1000 + (tid or 0) * 104729 + 17)
         seeded = true
      end
      local now = now_us()
      if sent_for ~= nil then answered(now) end -- a reconnection: wrk sends again without delay()
      -- Late (an answer came after the time of the next send): counted from the time it should have gone.
      -- Early (wrk sends a reconnected connection's request at once): counted from now.
      sent_for = scheduled and math.min(scheduled, now) or now
      if timed then paced_timer_late_us[#paced_timer_late_us + 1] = now - sent_for end
      timed = false
      return scenario_request()
   end

   -- No response(): with one, wrk copies every answer's headers and body into Lua, and that CPU is taken
   -- from the server. wrk calls delay() for a connection right after its answer is read (the next turn
   -- of the thread's event loop, which has this one connection only), so the answer's time is taken here.
   delay = function()
      local now = now_us()
      if sent_for ~= nil then answered(now) end
      if scheduled == nil then return 0 end
      local wait = math.ceil((scheduled - now) / 1000)
      timed = wait > 0
      return math.max(0, wait)
   end
end
