-- wrk script for benchmarks/serve_load.py: POST one image as a raw `image/png` body, again and again.
--
--   WRK_BODY_FILE=img.png [WRK_MAX_REQUESTS=N] wrk -t1 -c64 -d20s --latency -s wrk_post.lua http://127.0.0.1:8000/classify
--
-- WRK_MAX_REQUESTS (soak mode) ends the run after that many answers; it needs a `response` hook, which makes
-- wrk hand every answer to Lua, so the hook is only defined in that mode. done() prints one line
-- "WRK_JSON {...}" with the counts, errors and latency percentiles (microseconds) for serve_load.py to parse.
-- Read at load time, in every thread's Lua state (wrk runs this file once per thread).

local body_file = assert(os.getenv("WRK_BODY_FILE"), "set WRK_BODY_FILE to the image to post")
local handle = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = handle:read("*a")
wrk.headers["Content-Type"] = "image/png"
handle:close()

local max_requests = tonumber(os.getenv("WRK_MAX_REQUESTS") or "0")
if max_requests > 0 then
  local answered = 0
  function response(status, headers, body)
    answered = answered + 1
    if answered == max_requests then
      wrk.thread:stop()
      -- stop() only ends this thread's loop: wrk's main thread still sleeps out the whole -d duration unless
      -- interrupted. SIGINT is wrk's own "stop now and report"; the shell's parent is this wrk process. Not
      -- os.execute: system() ignores SIGINT in the caller until the command ends, so the signal would be lost.
      io.popen("kill -INT $PPID"):close()
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)
  ))
end
