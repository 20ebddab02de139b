-- bench/trigger.lua -- wrk script for make bench: POST a small JSON body with a
-- bearer token (env JOBGATE_TOKEN) to the URL's path, keep-alive.
wrk.method = "POST"
wrk.body = '{"bench":true,"n":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("JOBGATE_TOKEN") or "")
