-- Extend the leases a node still holds; also its poll of the stop flag.
-- KEYS[1] = P:seed. ARGV: prefix, factor, floor_ms, then pairs id, lease.
-- Returns {'lost'} | {'ok', stop_reason_or_empty, renewed_count}.
local p, factor, floor_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner, deadline = p .. ':owner', p .. ':deadline'
local renewed = {}
for i = 4, #ARGV, 2 do
  local id, l = ARGV[i], ARGV[i + 1]
  local o = redis.call('HGET', owner, id)
  -- Fencing: only the current lease extends; a node whose lease was reclaimed must not keep
  -- the new holder's lease alive (nor revive a finished test's).
  if o then
    local held, m = string.match(o, '^%d+ (%d+) (%d+)$')
    if held == l then
      local len = math.max(factor * tonumber(m) / 1000, floor_ms)
      renewed[#renewed + 1] = now + math.floor(len)
      renewed[#renewed + 1] = id
    end
  end
end
for i = 1, #renewed, 1000 do
  redis.call('ZADD', deadline, 'XX', unpack(renewed, i, math.min(i + 999, #renewed)))
end
return {'ok', redis.call('GET', p .. ':stop') or '', #renewed / 2}
