-- bench/trigger.lua -- wrk script for make bench: POST a small JSON body with a
-- bearer token (env JOBGATE_TOKEN) to the URL's path, keep-alive.
-- Optional arg (after --): per-thread request limit; the thread stops after
-- that many responses (used to build a log of a given size).
local limit = 0
local done = 0

function init(args)
  limit = tonumber(args[1] or "0") or 0
end

wrk.method = "POST"
wrk.body = '{"bench":true,"n":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("JOBGATE_TOKEN") or "")

function response(status, headers, body)
  done = done + 1
  if limit > 0 and done >= limit then
    wrk.thread:stop()
  end
end
