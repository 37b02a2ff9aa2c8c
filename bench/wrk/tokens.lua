-- wrk load for bench/run.sh: every request carries `Authorization: Bearer tok-N`.
--
-- Environment:
--   QG_PICK    cycle  (default) N = 0, 1, ..., QG_TOKENS-1, 0, ... (each wrk thread starts
--                     at its own offset); requests are prebuilt, so Lua costs little
--              random N uniform in [0, QG_TOKENS)
--              one    N = 0 only (the hot token); no Lua runs per request
--              once   N = 0 .. QG_TOKENS-1 each once (split across QG_THREADS threads); a thread
--                     that has its answers creates the file QG_DONE.<thread> and stops. wrk
--                     itself runs on until -d, so bench/run.sh waits for those files and
--                     stops wrk with SIGINT (for the memory measurements)
--   QG_TOKENS  how many distinct tokens (default 10000)
--
-- The path is the URL's (Traefik routes the scenarios by path).
--
-- done() prints one machine-readable line: `RESULT rps=.. p50_us=.. p99_us=.. requests=..
-- non2xx=.. errors=..` (non2xx counts 429s, which are expected in the quotagate scenarios).

local pick = os.getenv("QG_PICK") or "cycle"
local tokens = tonumber(os.getenv("QG_TOKENS") or "10000")
-- The path of the URL given to wrk (it routes the Traefik scenarios).
local path = wrk.path

local thread_count = 0

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end

local head = "GET " .. path .. " HTTP/1.1\r\nHost: bench.local\r\nAuthorization: Bearer tok-"
local function request_for(n)
  return head .. n .. "\r\n\r\n"
end

if pick == "one" then
  wrk.path = path
  wrk.headers["Host"] = "bench.local"
  wrk.headers["Authorization"] = "Bearer tok-0"
elseif pick == "cycle" then
  local prebuilt = {}
  local i = 0
  function init(args)
    for n = 0, tokens - 1 do
      prebuilt[n] = request_for(n)
    end
    -- Threads start at different offsets so they do not send the same token in lock step.
    i = (id * 7919) % tokens
  end
  function request()
    local r = prebuilt[i]
    i = i + 1
    if i == tokens then i = 0 end
    return r
  end
elseif pick == "random" then
  function init(args)
    math.randomseed(os.time() + id * 104729)
  end
  function request()
    return request_for(math.random(0, tokens - 1))
  end
elseif pick == "once" then
  local next_n, step, answered, mine = 0, 1, 0, 0
  function init(args)
    -- Thread `id` of `threads` sends id, id + threads, id + 2 * threads, ...
    step = tonumber(os.getenv("QG_THREADS") or "1")
    next_n = id
    mine = math.floor((tokens - id + step - 1) / step)
  end
  function request()
    local n = next_n
    next_n = next_n + step
    -- Requests sent after this thread's share (the connections still in flight) repeat a token
    -- already counted, so they add no key.
    if next_n >= tokens then next_n = id end
    return request_for(n)
  end
  function response(status, headers, body)
    answered = answered + 1
    if answered == mine then
      local f = assert(io.open(os.getenv("QG_DONE") .. "." .. id, "w"))
      f:close()
      wrk.thread:stop()
    end
  end
else
  error("QG_PICK must be cycle, random, one or once (got " .. pick .. ")")
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d errors=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99), summary.requests,
    e.status, e.connect + e.read + e.write + e.timeout))
end
