-- Seed the queue: run only by the node that won `SET P:seed "seeding <node>" NX`.
-- Everything (lists, left, meta, ids, then `ready`) happens in this one script, so no reader
-- ever sees `ready` before the lists exist: Redis runs a script atomically.
-- KEYS[1] = P:seed (it routes the call in a cluster; every other key shares its hash tag).
-- ARGV: prefix, node, ttl_secs, digest, count, ids_joined, nodes, then per node:
--       its entry count followed by its entries ("<micros> <id1>\n<id2>...").
local p, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = tonumber(ARGV[7])
-- Another node may have won meanwhile (the seed key expired and was taken again): only the
-- holder of the `seeding <node>` marker pushes.
if redis.call('GET', KEYS[1]) ~= 'seeding ' .. node then
  return 0
end
local i = 8
for n = 0, nodes - 1 do
  local len = tonumber(ARGV[i])
  local key = p .. ':q:' .. n
  local left = 0
  redis.call('DEL', key)
  -- RPUSH in chunks: Lua's unpack is limited to a few thousand values per call.
  local j = 1
  while j <= len do
    local last = math.min(j + 999, len)
    local chunk = {}
    for k = j, last do
      local e = ARGV[i + k]
      chunk[#chunk + 1] = e
      left = left + tonumber(string.match(e, '^(%d+) '))
    end
    redis.call('RPUSH', key, unpack(chunk))
    j = last + 1
  end
  if len > 0 then redis.call('EXPIRE', key, ttl) end
  -- `left` names non-empty lists only (a thief scans it).
  if len > 0 then redis.call('HSET', p .. ':left', n, left) end
  i = i + len + 1
end
redis.call('EXPIRE', p .. ':left', ttl)
local t = redis.call('TIME')
redis.call('HSET', p .. ':meta', 'nodes', nodes, 'count', ARGV[5], 'digest', ARGV[4],
  'seeded_by', node, 'seeded_at_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('EXPIRE', p .. ':meta', ttl)
redis.call('SET', p .. ':ids', ARGV[6], 'EX', ttl)
-- The lease keys exist from here on with the build's TTL, each with a sentinel so that it is
-- never emptied and deleted: a take then need not refresh their TTL (it runs once per batch on
-- every node). The sentinel ('' with deadline +inf) never expires and is no test id.
redis.call('HSET', p .. ':owner', '', '')
redis.call('ZADD', p .. ':deadline', '+inf', '')
redis.call('SET', p .. ':lease_ctr', 0, 'EX', ttl)
redis.call('EXPIRE', p .. ':owner', ttl)
redis.call('EXPIRE', p .. ':deadline', ttl)
-- Last: readers poll for this value.
redis.call('SET', KEYS[1], 'ready', 'EX', ttl)
return 1
