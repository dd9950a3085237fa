-- GET a path picked at random from BENCH_PATHS (one path a line), with the API key if there is one.
local paths
init = function(args)
   paths = read_lines(os.getenv("BENCH_PATHS"))
   math.randomseed(os.time() + (tid or 0) * 7919)
end

request = function()
   return wrk.format("GET", paths[math.random(#paths)], get_headers)
end
