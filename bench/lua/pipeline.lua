-- The seed pipeline flow, by many concurrent pipelines: create, five transitions, finalize (100), each
-- with an Idempotency-Key as the Concourse resource sends. Each thread runs BENCH_PIPELINES pipelines
-- round robin (many more than its connections), so a pipeline's previous step has been answered before
-- its next one is sent; each finished pipeline starts over with a new build.
local pipelines = tonumber(os.getenv("BENCH_PIPELINES") or "256")
local run = os.getenv("BENCH_RUN") or "run"
local platforms = {"aws", "azure", "gcp", "vsphere", "openstack"}
local oses = {"rhel-9.4", "ubuntu-24.04", "windows-2022"}
local images = {"base", "cis", "hardened"}
local codes = {10, 25, 50, 75, 90, 100}
local position, counter = -1, 0

request = function()
   if position < 0 then
      -- wrk asks for one request up front and may never send it: let that one be a harmless GET.
      position = 0
      return wrk.format("GET", "/health")
   end
   local slot = position % pipelines
   local round = math.floor(position / pipelines)
   local step = round % 7
   local generation = math.floor(round / 7)
   position = position + 1
   counter = counter + 1
   local build_id = run .. "-t" .. tid .. "-p" .. slot .. "-g" .. generation
   local headers = {
      ["Content-Type"] = "application/json", ["X-API-Key"] = api_key,
      ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. counter,
   }
   if step == 0 then
      local body = string.format(
         '{"platform":"%s","os_version":"%s","image_type":"%s","build_id":"%s",' ..
         '"labels":{"pipeline":"bench"},"provenance":{"team":"bench","pipeline":"p%d","job":"build"}}',
         platforms[slot % #platforms + 1], oses[slot % #oses + 1], images[slot % #images + 1], build_id, slot)
      return wrk.format("POST", "/builds", headers, body)
   end
   local body = '{"state_code":' .. codes[step] .. ',"provenance":{"team":"bench","job":"build"}}'
   return wrk.format("POST", "/builds/" .. build_id .. "/state", headers, body)
end
