-- quotagate: check and count every limit of one request, atomically, in one round trip.
-- Mirrors src/limiter (fixed calendar window, sliding window, GCRA) in microseconds, with the
-- time taken from Redis so that replicas with skewed clocks agree.
--
-- KEYS[i]  one hash per limit: a = window end (or GCRA's TAT), c = count, p = previous count.
--          Keys of one request share a hash tag, so this runs on Redis Cluster.
-- ARGV[1]  "1" to count denied requests too.
-- ARGV[2 + 4(i-1) ..]  for limit i: kind ("f" fixed, "s" sliding, "g" GCRA), quota,
--          a (window length in µs, 0 for a calendar month; GCRA: emission interval in µs),
--          b (window offset in µs: weeks start on Monday).
-- Reply: {all allowed (0/1), then per limit: allowed, remaining, reset µs, retry µs, window µs}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local DAY = 86400000000

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

-- The window containing `at`: start, end. fmod is exact on doubles, floor(x / len) is not.
local function bounds(len, off, at)
  if len > 0 then
    local x = at + off
    local start = x - math.fmod(x, len) - off
    return start, start + len
  end
  local days = (at - math.fmod(at, DAY)) / DAY
  local y, m = civil_from_days(days)
  local start = days_from_civil(y, m, 1) * DAY
  if m == 12 then y = y + 1; m = 1 else m = m + 1 end
  return start, days_from_civil(y, m, 1) * DAY
end

local count_denied = ARGV[1] == '1'
local n = #KEYS
local limits = {}
local all = true
for i = 1, n do
  local j = 2 + (i - 1) * 4
  local l = { kind = ARGV[j], quota = tonumber(ARGV[j + 1]), a = tonumber(ARGV[j + 2]), b = tonumber(ARGV[j + 3]) }
  local v = redis.call('HMGET', KEYS[i], 'a', 'c', 'p')
  l.at, l.c, l.p = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if l.kind == 'g' then
    local e = l.a
    local tau = e * (l.quota - 1)
    local tat = math.max(l.at, now)
    l.ok = tat <= now + tau
    if l.ok then
      l.remaining = math.floor((now + tau - tat) / e)
      l.reset = tat + e - now
      l.retry = 0
    else
      l.remaining = 0
      l.reset = tat - now
      l.retry = tat - tau - now
    end
    l.window = e * l.quota
  else
    local start, stop = bounds(l.a, l.b, now)
    if now >= l.at then
      -- A new window: only the one right before it still weighs (sliding).
      if l.kind == 's' and start == l.at then l.p = l.c else l.p = 0 end
      l.c = 0
      l.at = stop
    end
    local len = stop - start
    local used = l.c
    if l.kind == 's' then used = l.c + math.ceil(l.p * ((l.at - now) / len)) end
    l.ok = used < l.quota
    l.remaining = l.ok and (l.quota - 1 - used) or 0
    l.reset = l.at - now
    l.window = len
    if l.ok then
      l.retry = 0
    elseif l.kind == 'f' then
      l.retry = l.reset
    elseif l.c < l.quota then
      local slack = math.floor((l.quota - 1 - l.c) * (len / math.max(l.p, 1)))
      l.retry = math.max(l.at - slack - now, 1)
    else
      local nstart, nstop = bounds(l.a, l.b, l.at)
      local slack = math.floor((l.quota - 1) * ((nstop - nstart) / l.c))
      l.retry = nstop - slack - now
    end
  end
  all = all and l.ok
  limits[i] = l
end

if all or count_denied then
  for i = 1, n do
    local l = limits[i]
    local expires
    if l.kind == 'g' then
      l.at = math.max(l.at, now) + l.a
      expires = l.at
    else
      l.c = l.c + 1
      expires = l.at
      if l.kind == 's' then
        local _, nstop = bounds(l.a, l.b, l.at)
        expires = nstop
      end
    end
    redis.call('HSET', KEYS[i], 'a', l.at, 'c', l.c, 'p', l.p)
    redis.call('PEXPIREAT', KEYS[i], math.floor(expires / 1000) + 1)
  end
end

local out = { all and 1 or 0 }
for i = 1, n do
  local l = limits[i]
  table.insert(out, l.ok and 1 or 0)
  table.insert(out, l.remaining)
  table.insert(out, l.reset)
  table.insert(out, l.retry)
  table.insert(out, l.window)
end
return out
