-- POST /builds alone, without an Idempotency-Key: every request a new build (a thread's own run prefix and
-- counter), on the platforms, OS versions and image types of the bench's history.
local run = os.getenv("BENCH_RUN") or "run"
local platforms = {"aws", "azure", "gcp", "vsphere", "openstack"}
local oses = {"rhel-9.4", "ubuntu-24.04", "windows-2022"}
local images = {"base", "cis", "hardened"}
local counter = 0

request = function()
   counter = counter + 1
   local body = string.format(
      '{"platform":"%s","os_version":"%s","image_type":"%s","build_id":"%s-t%d-%d","labels":{"pipeline":"bench"}}',
      platforms[counter % #platforms + 1], oses[counter % #oses + 1], images[counter % #images + 1],
      run, tid or 0, counter)
   return wrk.format("POST", "/builds", json_headers, body)
end
