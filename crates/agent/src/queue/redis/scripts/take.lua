-- Take a batch for one node, in one round trip.
-- KEYS[1] = P:seed. ARGV: prefix, node, nodes, max_tests, want_micros, factor, floor_ms, ttl_secs.
-- Returns {'lost'} | {'stop', reason} | {'drained'} | {'exhausted'} |
--         {'tests', id1, lease1, micros1, reclaimed1, id2, ...}.
-- Redis runs one script at a time and every node's take waits behind the others': the work per
-- call is kept small (multi-field HSET/ZADD, one lease id per call, no scan of empty lists,
-- no TTL refresh).
local p, node = ARGV[1], ARGV[2]
local max_tests, want = tonumber(ARGV[4]), tonumber(ARGV[5])
local factor, floor_ms, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
-- The seed key outlives the run: without it Redis lost our data (restarted without persistence,
-- or evicted): a node must not take an empty queue for a finished one.
local flags = redis.call('MGET', KEYS[1], p .. ':stop')
if not flags[1] then return {'lost'} end
if flags[2] then return {'stop', flags[2]} end

-- Redis's clock, not the nodes': no skew between containers.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner, deadline, left = p .. ':owner', p .. ':deadline', p .. ':left'
local out, count, micros = {'tests'}, 0, 0
local owners, deadlines = {}, {}
-- One fresh lease id per call (fencing): an ack or a renewal must show the lease it got here;
-- a test reclaimed later gets another call's id.
local lease_id = nil

local function lease(id, m, reclaimed)
  lease_id = lease_id or redis.call('INCR', p .. ':lease_ctr')
  local len = math.max(factor * m / 1000, floor_ms)
  owners[#owners + 1] = id; owners[#owners + 1] = node .. ' ' .. lease_id .. ' ' .. m
  deadlines[#deadlines + 1] = now + math.floor(len); deadlines[#deadlines + 1] = id
  out[#out + 1] = id; out[#out + 1] = lease_id; out[#out + 1] = m; out[#out + 1] = reclaimed
  count = count + 1
  micros = micros + m
end

-- Leases of a dead or stalled node first: they are the oldest work of the job.
local expired = redis.call('ZRANGEBYSCORE', deadline, '-inf', now, 'LIMIT', 0, max_tests)
for _, id in ipairs(expired) do
  local o = redis.call('HGET', owner, id)
  if redis.call('HEXISTS', p .. ':done', id) == 1 then
    redis.call('ZREM', deadline, id)
    redis.call('HDEL', owner, id)
  else
    local m = o and tonumber(string.match(o, '(%d+)$')) or 0
    redis.call('HINCRBY', p .. ':reclaimed', id, 1)
    redis.call('EXPIRE', p .. ':reclaimed', ttl)
    lease(id, m, 1)
  end
end

-- Lease every test of a popped entry ("<micros> <id1>\n<id2>..."); an entry's micros are
-- shared evenly between its tests.
-- The caller subtracts the micros from `left` once per list.
local function take_entry(e)
  local m, ids = string.match(e, '^(%d+) (.*)$')
  m = tonumber(m)
  local list = {}
  for id in string.gmatch(ids, '[^\n]+') do list[#list + 1] = id end
  for _, id in ipairs(list) do lease(id, math.floor(m / #list), 0) end
  return m
end

-- `left` lists only non-empty lists, so that a thief looks at those alone.
local function forget_if_empty(q, n)
  if redis.call('LLEN', q) == 0 then redis.call('HDEL', left, n) end
end

-- Own list from the head (its heavy atoms come first): one LRANGE of at most max_tests entries
-- (each holds at least one test) and one LTRIM, rather than a call per entry.
local own = p .. ':q:' .. node
local mine, used = 0, 0
if count < max_tests then
  local head = redis.call('LRANGE', own, 0, max_tests - count - 1)
  for _, e in ipairs(head) do
    if count >= max_tests or (count > 0 and micros >= want) then break end
    mine = mine + take_entry(e)
    used = used + 1
  end
  if used > 0 then
    redis.call('LTRIM', own, used, -1)
    redis.call('HINCRBY', left, node, -mine)
    if used == #head then forget_if_empty(own, node) end
  end
end

-- Nothing of our own: steal from the tail (light atoms) of the list with most time left,
-- at most half of it, so that the victim keeps its heavy head.
if count == 0 then
  local all = redis.call('HGETALL', left)
  local victim, best = nil, -1
  for i = 1, #all, 2 do
    local l = tonumber(all[i + 1])
    if l > best then victim, best = all[i], l end
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
      got = got + take_entry(e)
    end
    redis.call('HINCRBY', left, victim, -got)
    forget_if_empty(q, victim)
  end
end

if count == 0 then
  -- Leases in flight elsewhere may still expire and come back.
  -- (More than the seed's sentinel.)
  if redis.call('ZCARD', deadline) > 1 then return {'drained'} end
  return {'exhausted'}
end
-- In chunks: Lua's unpack is limited to a few thousand values (an entry may be a big scope).
for i = 1, #owners, 1000 do
  redis.call('HSET', owner, unpack(owners, i, math.min(i + 999, #owners)))
  redis.call('ZADD', deadline, unpack(deadlines, i, math.min(i + 999, #deadlines)))
end
-- No EXPIRE here: owner, deadline and lease_ctr got the build's TTL at seeding and are never
-- deleted (sentinels), so they keep it.
return out
