-- quotagate: read the counters of one request's limits, counting nothing (Store::peek). The
-- arithmetic is left to the caller (src/store/redis_admin.rs), which runs the very check the
-- memory store runs on what this returns, so it cannot drift from check.lua's.
--
-- KEYS[i]  one hash per limit, as check.lua keeps it: s, n (window end or TAT, in seconds and
--          nanoseconds), c (count), p (previous count), a (an older layout's instant in
--          microseconds). Keys of one request share a hash tag (Redis Cluster).
-- Reply: {Redis's clock in seconds, its microseconds, then per key: s, n, c, p, a}, -1 where a
--          field is absent.

local t = redis.call('TIME')
local out = { tonumber(t[1]), tonumber(t[2]) }
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 's', 'n', 'c', 'p', 'a')
  for j = 1, 5 do
    table.insert(out, tonumber(v[j]) or -1)
  end
end
return out
