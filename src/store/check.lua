-- quotagate: check and count every limit of one request, atomically, in one round trip
-- (after limits.lua, which reads ARGV[1] and holds the arithmetic).
--
-- ARGV[2]  the request's ticket: the member its concurrency slots are held under.
-- ARGV[3]  "1" to count denied requests too (a denied request never takes a slot).
-- ARGV[4 + 5(i-1) ..]  limit i's arguments, for KEYS[i] (see limits.lua).
-- Reply: {all allowed (0/1), slots whose hold had ended, then per limit: allowed, remaining,
--          reset ns, retry ns, window ns, wait ns}, each read from the state the request left
--          behind.

local count_denied = ARGV[3] == '1'
local limits = {}
local all = true
for i = 1, #KEYS do
  limits[i] = load(i, 4 + (i - 1) * 5)
  all = all and limits[i].ok
end

local out = { all and 1 or 0, 0 }
for _, l in ipairs(limits) do
  if l.kind == 'c' then
    if all then hold(l, ARGV[2]) end
  elseif all or count_denied then
    record(l, l.w)
  end
  verdict(l, out)
end
out[2] = ended
return out
