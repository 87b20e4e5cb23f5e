-- Take a batch for one node, in one round trip.
-- KEYS[1] = P:seed. ARGV: prefix, node, nodes, max_tests, want_micros, factor, floor_ms, ttl_secs.
-- Returns {'lost'} | {'stop', reason} | {'drained'} | {'exhausted'} |
--         {'tests', id1, lease1, micros1, reclaimed1, id2, ...}.
local p, node, nodes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_tests, want = tonumber(ARGV[4]), tonumber(ARGV[5])
local factor, floor_ms, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
-- The seed key outlives the run: without it Redis lost our data (restarted without persistence,
-- or evicted): a node must not take an empty queue for a finished one.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local stop = redis.call('GET', p .. ':stop')
if stop then return {'stop', stop} end

-- Redis's clock, not the nodes': no skew between containers.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner, deadline = p .. ':owner', p .. ':deadline'
local out, count, micros = {'tests'}, 0, 0

-- Every lease gets a fresh id from the counter: acks and renewals prove the current lease.
local function lease(id, m, reclaimed)
  local l = redis.call('INCR', p .. ':lease_ctr')
  local len = math.max(factor * m / 1000, floor_ms)
  redis.call('HSET', owner, id, node .. ' ' .. l .. ' ' .. m)
  redis.call('ZADD', deadline, now + math.floor(len), id)
  out[#out + 1] = id; out[#out + 1] = l; out[#out + 1] = m; out[#out + 1] = reclaimed
  count = count + 1
  micros = micros + m
end

-- Leases of a dead or stalled node first: they are the oldest work of the job.
local expired = redis.call('ZRANGEBYSCORE', deadline, '-inf', now, 'LIMIT', 0, max_tests)
for _, id in ipairs(expired) do
  if redis.call('HEXISTS', p .. ':done', id) == 1 then
    redis.call('ZREM', deadline, id)
    redis.call('HDEL', owner, id)
  else
    local o = redis.call('HGET', owner, id)
    local m = o and tonumber(string.match(o, '(%d+)$')) or 0
    redis.call('HINCRBY', p .. ':reclaimed', id, 1)
    lease(id, m, 1)
  end
end

-- Lease every test of a popped entry ("<micros> <id1>\n<id2>..."); an entry's micros are
-- shared evenly between its tests.
local function take_entry(e, from)
  local m, ids = string.match(e, '^(%d+) (.*)$')
  m = tonumber(m)
  redis.call('HINCRBY', p .. ':left', from, -m)
  local list = {}
  for id in string.gmatch(ids, '[^\n]+') do list[#list + 1] = id end
  for _, id in ipairs(list) do lease(id, math.floor(m / #list), 0) end
  return m
end

-- Own list from the head (its heavy atoms come first).
local own = p .. ':q:' .. node
while count < max_tests and (count == 0 or micros < want) do
  local e = redis.call('LPOP', own)
  if not e then break end
  take_entry(e, node)
end

-- Nothing of our own: steal from the tail (light atoms) of the list with most time left,
-- at most half of it, so that the victim keeps its heavy head.
if count == 0 then
  local victim, best = nil, -1
  for n = 0, nodes - 1 do
    local q = p .. ':q:' .. n
    if redis.call('LLEN', q) > 0 then
      local l = tonumber(redis.call('HGET', p .. ':left', n) or '0')
      if l > best then victim, best = n, l end
    end
  end
  if victim then
    local q, limit = p .. ':q:' .. victim, math.min(want, math.floor(best / 2))
    local got = 0
    while count < max_tests do
      -- Peek first: an entry that would take more than the limit stays (unless it is the
      -- only thing we would get), which keeps the victim's heavy head where it is.
      local e = redis.call('LINDEX', q, -1)
      if not e then break end
      if count > 0 and got + tonumber(string.match(e, '^(%d+) ')) > limit then break end
      redis.call('RPOP', q)
      got = got + take_entry(e, victim)
    end
  end
end

if count == 0 then
  -- Leases in flight elsewhere may still expire and come back.
  if redis.call('ZCARD', deadline) > 0 then return {'drained'} end
  return {'exhausted'}
end
for _, k in ipairs({owner, deadline, p .. ':lease_ctr', p .. ':reclaimed'}) do
  redis.call('EXPIRE', k, ttl)
end
return out
