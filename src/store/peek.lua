-- quotagate: read the counters of one request's limits, counting nothing (Store::peek). The
-- arithmetic is left to the caller (src/store/redis_admin.rs), which runs the very check the
-- memory store runs on what this returns, so it cannot drift from limits.lua's.
--
-- KEYS[i]  one key per limit, as limits.lua keeps it: for a window or a bucket a hash (s, n:
--          window end or TAT in seconds and nanoseconds; c: count; p: previous count; a: an
--          older layout's instant in microseconds); for a concurrency limit a sorted set of
--          tickets scored by when their slot ends, in microseconds. Keys of one request share a
--          hash tag (Redis Cluster).
-- ARGV[1]  now, in nanoseconds since the epoch; empty for Redis's own clock (`TIME`).
-- ARGV[1 + i]  "c" if KEYS[i] is a concurrency limit's.
-- Reply: {now's seconds, its microseconds, then per key: for a hash, s, n, c, p, a (-1 where a
--          field is absent); for a sorted set, the number of slots that end after now, then
--          when each ends}.

local now_s, now_us
if ARGV[1] ~= '' then
  now_s = tonumber(string.sub(ARGV[1], 1, -10)) or 0
  now_us = math.floor(tonumber(string.sub(ARGV[1], -9)) / 1000)
else
  local t = redis.call('TIME')
  now_s, now_us = tonumber(t[1]), tonumber(t[2])
end
local out = { now_s, now_us }
for i = 1, #KEYS do
  if ARGV[1 + i] == 'c' then
    local ends = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. string.format('%d', now_s * 1000000 + now_us), '+inf', 'WITHSCORES')
    table.insert(out, #ends / 2)
    for j = 2, #ends, 2 do
      table.insert(out, tonumber(ends[j]))
    end
  else
    local v = redis.call('HMGET', KEYS[i], 's', 'n', 'c', 'p', 'a')
    for j = 1, 5 do
      table.insert(out, tonumber(v[j]) or -1)
    end
  end
end
return out
