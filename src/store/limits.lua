-- quotagate: the arithmetic of every limit kind, shared by check.lua and close.lua (each script
-- is this file followed by its own body; ARGV[1] is now for both, ARGV[2] a ticket id). The same integers as src/limiter (fixed calendar
-- window, sliding window, GCRA, concurrency slots), to the nanosecond. Lua's numbers are
-- doubles, exact for integers below 2^53 ns (104 days): instants are kept as (seconds,
-- nanoseconds) pairs, and only differences from `now` are single numbers. Config keeps windows,
-- buckets and debts within 100 days (limiter::MAX_SPAN), so every difference, wait and reset
-- below is exact; products that would not be (a sliding window's weight) go through muldiv.
--
-- Keys: one per limit, all of one caller, sharing the caller's hash tag (Redis Cluster).
--   windows: a hash, s = window end in seconds, c = count, p = previous count;
--   GCRA: a hash, s and n = the TAT in seconds and nanoseconds;
--   concurrency: a sorted set of ticket ids, each scored by when its slot's hold ends, in whole
--   microseconds since the epoch (exact in a double; limiter::slot_end rounds up to them).
-- ARGV[1]  now, in nanoseconds since the epoch; empty for Redis's own clock (`TIME`), so that
--          replicas with skewed clocks agree.
-- A limit's arguments, five from ARGV[j]: kind ("f" fixed, "s" sliding, "g" GCRA, "c"
--          concurrency), quota (concurrency: the most slots),
--          a (window length in seconds, 0 for a calendar month; GCRA: emission interval in ns;
--            concurrency: hold in ns),
--          b (window offset in seconds: weeks start on Monday; GCRA: max_delay in ns),
--          w (the request's weight in this limit: its cost, or 1; at least 1).

local E9 = 1000000000
local E6 = 1000000
local DAY = 86400
local MAX_SPAN = 100 * DAY * E9

-- An instant given in nanoseconds since the epoch (a decimal string), as (seconds, nanoseconds).
local function instant(arg)
  return tonumber(string.sub(arg, 1, -10)) or 0, tonumber(string.sub(arg, -9))
end

local now_s, now_n
if ARGV[1] ~= '' then
  now_s, now_n = instant(ARGV[1])
else
  local t = redis.call('TIME')
  now_s, now_n = tonumber(t[1]), tonumber(t[2]) * 1000
end

-- floor(x / y) for integers: fmod is exact on doubles, x / y is not.
local function div(x, y)
  return (x - math.fmod(x, y)) / y
end

-- floor(a * b / c) and the remainder, for integers 0 <= a < 2^32 and b, c < 2^53 whose quotient
-- is below 2^53: long multiplication by the bits of a, keeping q * c + r = (a's bits so far) *
-- (b mod c) with r < c, so no intermediate reaches 2^53.
local function muldiv(a, b, c)
  local rb = math.fmod(b, c)
  local whole = a * ((b - rb) / c)
  local q, r = 0, 0
  -- The highest bit of a: a = m * 2^e with 0.5 <= m < 1, exactly.
  local _, e = math.frexp(a)
  local bit = 2 ^ (e - 1)
  while bit >= 1 do
    q = q * 2
    if r >= c - r then q = q + 1; r = r - (c - r) else r = r + r end
    if a >= bit then
      a = a - bit
      if r >= c - rb then q = q + 1; r = r - (c - rb) else r = r + rb end
    end
    bit = bit / 2
  end
  return whole + q, r
end

-- Howard Hinnant's civil calendar algorithms, on small integers.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The window containing second `at` (windows are whole seconds): start, end, in seconds.
local function bounds(len, off, at)
  if len > 0 then
    local x = at + off
    local start = x - math.fmod(x, len) - off
    return start, start + len
  end
  local y, m = civil_from_days(div(at, DAY))
  local start = days_from_civil(y, m, 1) * DAY
  if m == 12 then y = y + 1; m = 1 else m = m + 1 end
  return start, days_from_civil(y, m, 1) * DAY
end

-- Nanoseconds from now to (s, n), for instants at most a few MAX_SPANs away.
local function from_now(s, n)
  return (s - now_s) * E9 + (n - now_n)
end

-- A key's time to live in milliseconds: until (s, n), relative to the now the script counts at
-- (Redis's or the caller's, so it holds for either), and a second more, so that a key is never
-- gone while a replica whose clock is a little behind still counts in it.
local function ttl(s, n)
  return div(from_now(s, n), 1000000) + 1001
end

-- What a request at now sees counted in a window ending at l.s: count and weighted previous.
local function used(l)
  if l.p == 0 then return l.c end
  local w, r = muldiv(l.p, from_now(l.s, 0), l.len)
  if r > 0 then w = w + 1 end
  return l.c + w
end

-- The GCRA's TAT less now, at least 0.
local function debt(l)
  if l.s > now_s or (l.s == now_s and l.n > now_n) then return from_now(l.s, l.n) end
  return 0
end

-- Slots whose hold has ended, dropped by this call.
local ended = 0

-- Nanoseconds from now to `us` microseconds since the epoch.
local function from_now_us(us)
  return (us - now_s * E6) * 1000 - now_n
end

-- The concurrency limit l: drops the slots whose hold has ended, and reads what is left: how
-- many (l.live) and when the oldest ends (l.oldest, in microseconds).
local function read_slots(l)
  ended = ended + redis.call('ZREMRANGEBYSCORE', l.key, '-inf', now_s * E6 + div(now_n, 1000))
  l.live = redis.call('ZCARD', l.key)
  l.oldest = tonumber(redis.call('ZRANGE', l.key, 0, 0, 'WITHSCORES')[2])
end

-- Limit i: KEYS[i] with its five arguments from ARGV[j], brought to now (a new window rolled,
-- ended slots dropped), and l.ok: whether a request of its weight fits.
local function load(i, j)
  local l = { key = KEYS[i], kind = ARGV[j], quota = tonumber(ARGV[j + 1]), a = tonumber(ARGV[j + 2]),
              b = tonumber(ARGV[j + 3]), w = tonumber(ARGV[j + 4]) }
  -- What the verdict's waits are for: a weight above the whole quota waits as one taking it all.
  l.wq = math.min(l.w, l.quota)
  if l.kind == 'c' then
    read_slots(l)
    l.ok = l.live < l.quota
    return l
  end
  local v = redis.call('HMGET', l.key, 's', 'n', 'c', 'p', 'a')
  l.s, l.n, l.c, l.p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if l.s == nil then
    -- A hash written in microseconds (field a) keeps its counts.
    local us = tonumber(v[5]) or 0
    l.s, l.n = div(us, 1000000), math.fmod(us, 1000000) * 1000
  end
  if l.kind == 'g' then
    l.tau = l.a * (l.quota - 1)
    -- Within max_delay of its last token (w - 1 intervals after the TAT), a request reserves
    -- its tokens and waits (limiter::gcra). A product past 2^53 rounds, but stays above the
    -- right side, which is below 2^53.
    l.ok = debt(l) + (l.w - 1) * l.a <= l.tau + l.b
  else
    local start, stop = bounds(l.a, l.b, now_s)
    if now_s >= l.s then
      -- A new window: only the one right before it still weighs (sliding).
      if l.kind == 's' and start == l.s then l.p = l.c else l.p = 0 end
      l.c, l.s, l.n = 0, stop, 0
    end
    l.len = (stop - start) * E9
    l.used = used(l)
    l.ok = l.used + l.w <= l.quota
  end
  return l
end

-- Counts w into the window or bucket l and writes it back.
local function record(l, w)
  if l.kind == 'g' then
    -- w emission intervals on, the debt capped at MAX_SPAN (as limiter::gcra::record). An
    -- inexact product is past 2^53 > MAX_SPAN either way.
    local d = debt(l)
    local add = l.a * w
    local moved
    if d >= MAX_SPAN - add then moved = math.max(MAX_SPAN, d) else moved = d + add end
    local total = now_n + moved
    l.s, l.n = now_s + div(total, E9), math.fmod(total, E9)
    redis.call('HSET', l.key, 's', l.s, 'n', l.n)
    redis.call('PEXPIRE', l.key, ttl(l.s, l.n))
  else
    -- Counts saturate at u32::MAX, as limiter's do. The previous window's weight stays.
    local c = math.min(l.c + w, 4294967295)
    l.used = l.used + (c - l.c)
    l.c = c
    local expires = l.s
    if l.kind == 's' then
      local _, nstop = bounds(l.a, l.b, l.s)
      expires = nstop
    end
    redis.call('HSET', l.key, 's', l.s, 'c', l.c, 'p', l.p)
    redis.call('PEXPIRE', l.key, ttl(expires, 0))
  end
end

-- `ticket` holds a slot of the concurrency limit l until its hold (l.a) ends; the key lives as
-- long as its last slot.
local function hold(l, ticket)
  local end_us = now_s * E6 + div(now_n + l.a + 999, 1000)
  redis.call('ZADD', l.key, end_us, ticket)
  local last = tonumber(redis.call('ZRANGE', l.key, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', l.key, div(from_now_us(last), 1000000) + 1001)
  read_slots(l)
end

-- Appends l's verdict to out: allowed, remaining, reset ns, retry ns, window ns, wait ns, read
-- from the state the request left behind.
local function verdict(l, out)
  local remaining, reset, retry, window
  local wait = 0
  if l.kind == 'c' then
    remaining = math.max(l.quota - l.live, 0)
    reset = l.oldest and from_now_us(l.oldest) or 0
    retry = (remaining > 0) and 0 or reset
    window = l.a
  elseif l.kind == 'g' then
    local e = l.a
    local d = debt(l)
    remaining = (d <= l.tau) and (div(l.tau - d, e) + 1) or 0
    reset = d
    -- Its last token comes (wq - 1) intervals after the TAT; tau less those is exact, d plus
    -- them need not be.
    retry = math.max(d - (l.tau - (l.wq - 1) * e), 0)
    window = e * l.quota
    if l.ok and l.b > 0 then wait = math.max(d - window, 0) end
  else
    remaining = math.max(l.quota - l.used, 0)
    reset = from_now(l.s, 0)
    window = l.len
    if remaining >= l.wq then
      retry = 0
    elseif l.kind == 'f' then
      retry = reset
    elseif l.c + l.wq <= l.quota then
      -- Within this window, once the previous window's weight has shrunk enough.
      retry = reset - muldiv(l.quota - l.wq - l.c, l.len, math.max(l.p, 1))
    else
      -- No room in this window: in the next one, this window's count is the weight.
      local nstart, nstop = bounds(l.a, l.b, l.s)
      retry = from_now(nstop, 0) - muldiv(l.quota - l.wq, (nstop - nstart) * E9, math.max(l.c, 1))
    end
  end
  table.insert(out, l.ok and 1 or 0)
  table.insert(out, remaining)
  table.insert(out, reset)
  table.insert(out, retry)
  table.insert(out, window)
  table.insert(out, wait)
end
