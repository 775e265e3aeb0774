-- wrk script for `evloop-bench compare http`: pipelined requests.
--
--   wrk -t1 -c50 -d5s -s bench/scripts/pipeline.lua http://127.0.0.1:PORT/hello.txt -- 16
--
-- Every write carries DEPTH requests (the argument after `--`, 16 if none)
-- for the URL's path; wrk sends the next batch on a connection once all
-- DEPTH responses of the last one are in, and counts each response as a
-- request.
init = function(args)
   local depth = tonumber(args[1]) or 16
   local batch = {}
   for i = 1, depth do
      batch[i] = wrk.format()
   end
   pipelined = table.concat(batch)
end

request = function()
   return pipelined
end
