-- items.lua - the wrk workload of the prefork-http demo.
--
--   wrk -t2 -c64 -d8s -s items.lua http://127.0.0.1:PORT -- KEYS
--
-- Every request is GET /item/<id> with id uniform in 1..KEYS (default
-- 2000).  Uniform, not Zipf, on purpose: every worker then needs every key
-- within each TTL, which is the case a shared cache is for (a private cache
-- per worker pays each key once per worker); with a Zipf mix the rarely
-- asked keys are seen by one worker at a time and the modes differ less.
-- At the end, one line of figures for demo.sh to read (latencies in us).

local threads = {}
local keys = 2000

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   if args[1] then
      keys = tonumber(args[1])
   end
   -- A different sequence per thread and per run.
   math.randomseed(os.time() * 1000 + id)
end

function request()
   return wrk.format("GET", "/item/" .. math.random(1, keys))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK requests=%d duration_us=%d rps=%.0f p50_us=%d p99_us=%d " ..
      "connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout))
end
