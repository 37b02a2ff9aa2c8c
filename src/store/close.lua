-- quotagate: close a ticket, once (after limits.lua, which reads ARGV[1] and holds the
-- arithmetic). Frees its concurrency slots and charges the cost its backend reports to the
-- limits counting cost, without asking whether it fits: it may take them over their quota (a
-- bucket no further than its debt cap).
--
-- KEYS[1]  the ticket's closed marker, in the caller's hash tag: set once (NX), until the
--          ticket expires, so that a second close finds it and does nothing.
-- KEYS[i], i > 1  a limit of the ticket's scopes: a concurrency limit (its slot is freed) or a
--          window or bucket counting cost (charged), with its arguments (see limits.lua) from
--          ARGV[5 + 5(i-2)], the weight being the cost.
-- ARGV[2]  the ticket: the member its slots are held under.
-- ARGV[3]  when the ticket expires, in nanoseconds since the epoch.
-- ARGV[4]  the cost to charge.
-- Reply: {0} if the ticket had expired or was closed already; else {1, slots freed, slots
--          whose hold had ended, then per limit charged: allowed (whether the cost fitted),
--          remaining, reset ns, retry ns, window ns, wait ns, as a request of cost 1 would see it
--          next}.

local expires_s, expires_n = instant(ARGV[3])
if from_now(expires_s, expires_n) <= 0 then return { 0 } end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ttl(expires_s, expires_n)) then return { 0 } end

local cost = tonumber(ARGV[4])
local out = { 1, 0, 0 }
for i = 2, #KEYS do
  local l = load(i, 5 + (i - 2) * 5)
  if l.kind == 'c' then
    out[2] = out[2] + redis.call('ZREM', l.key, ARGV[2])
  else
    record(l, cost)
    l.wq = 1
    verdict(l, out)
  end
end
out[3] = ended
return out
