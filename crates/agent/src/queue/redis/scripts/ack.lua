-- Acknowledge finished tests. First acknowledgement wins (HSETNX semantics on `done`); a
-- fenced-out lease (the test was reclaimed and re-leased) never clears the live holder's lease.
-- KEYS[1] = P:seed. ARGV: prefix, node, maxfail, ttl_secs, then triples id, lease, hard(0|1).
-- Returns {'lost'} or {'ok', first1, first2, ...} (1 = this ack was the first).
-- Multi-field reads and writes: the script runs once per batch of acks and blocks Redis while
-- it does.
local p, node, maxfail, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local owner, deadline, done = p .. ':owner', p .. ':deadline', p .. ':done'
local ids = {}
for i = 5, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local out = {'ok'}
if #ids == 0 then return out end
local dones = redis.call('HMGET', done, unpack(ids))
local owners = redis.call('HMGET', owner, unpack(ids))
local firsts, hard_firsts, seen = {}, 0, {}
for k, id in ipairs(ids) do
  local l, hard = ARGV[3 + 3 * k], ARGV[4 + 3 * k]
  -- Counted whatever happens: >1 means it ran twice (the summary says so).
  redis.call('HINCRBY', p .. ':runs', id, 1)
  local first = 0
  if not dones[k] and not seen[id] then
    local held = owners[k] and string.match(owners[k], '^%d+ (%d+) ') or nil
    -- No owner at all: nobody else holds it, so this result is not lost either.
    if held == nil or held == l then
      first = 1
      seen[id] = true
      firsts[#firsts + 1] = id
      if hard == '1' then hard_firsts = hard_firsts + 1 end
    end
  end
  out[#out + 1] = first
end
if #firsts > 0 then
  local set = {}
  for _, id in ipairs(firsts) do set[#set + 1] = id; set[#set + 1] = node end
  redis.call('HSET', done, unpack(set))
  redis.call('HDEL', owner, unpack(firsts))
  redis.call('ZREM', deadline, unpack(firsts))
  redis.call('EXPIRE', done, ttl)
end
if hard_firsts > 0 then
  local fails = redis.call('INCRBY', p .. ':fails', hard_firsts)
  redis.call('EXPIRE', p .. ':fails', ttl)
  if maxfail > 0 and fails >= maxfail and redis.call('EXISTS', p .. ':stop') == 0 then
    local what = fails == 1 and 'hard failure' or 'hard failures'
    redis.call('SET', p .. ':stop', fails .. ' ' .. what .. ' reached --maxfail=' ..
      maxfail .. ' (node ' .. (tonumber(node) + 1) .. ')', 'EX', ttl)
  end
end
redis.call('EXPIRE', p .. ':runs', ttl)
return out
