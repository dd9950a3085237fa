-- POST /builds/{ref}/state alone, every request a real transition. Each thread owns every T-th build of
-- BENCH_BUILDS and visits them round robin: build k gets 5, 10, ... 100, then a reset, then 5 again. A
-- build is visited again only after len/T - connections other requests, so its previous change has long
-- been answered (a change still in flight would turn the next one into a 409, counted as an error).
local builds, position = {}, 0
local with_key = os.getenv("BENCH_IDEMPOTENCY") == "1"
local run = os.getenv("BENCH_RUN") or "run"
local counter = 0

init = function(args)
   local all = read_lines(os.getenv("BENCH_BUILDS"))
   local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
   for i, ref in ipairs(all) do
      if (i - 1) % threads == tid then builds[#builds + 1] = ref end
   end
end

request = function()
   local slot = position % #builds
   local step = math.floor(position / #builds) % 21
   position = position + 1
   local ref = builds[slot + 1]
   local headers = {["Content-Type"] = "application/json", ["X-API-Key"] = api_key}
   if with_key then
      counter = counter + 1
      headers["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter
   end
   if step == 20 then
      return wrk.format("POST", "/builds/" .. ref .. "/reset", headers, '{"reason":"bench cycle"}')
   end
   local body = '{"state_code":' .. ((step + 1) * 5) .. ',"message":"bench step ' .. step .. '"}'
   return wrk.format("POST", "/builds/" .. ref .. "/state", headers, body)
end
