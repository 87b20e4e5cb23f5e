-- Acknowledge finished tests. First acknowledgement wins (HSETNX done); a fenced-out lease
-- (the test was reclaimed and re-leased) never clears the live holder's lease.
-- KEYS[1] = P:seed. ARGV: prefix, node, maxfail, ttl_secs, then triples id, lease, hard(0|1).
-- Returns {'lost'} or {'ok', first1, first2, ...} (1 = this ack was the first).
local p, node, maxfail, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'lost'} end
local owner, deadline, done = p .. ':owner', p .. ':deadline', p .. ':done'
local out = {'ok'}
for i = 5, #ARGV, 3 do
  local id, l, hard = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  -- Counted whatever happens: >1 means it ran twice (the summary says so).
  redis.call('HINCRBY', p .. ':runs', id, 1)
  local first = 0
  if redis.call('HEXISTS', done, id) == 0 then
    local o = redis.call('HGET', owner, id)
    local held = o and string.match(o, '^%d+ (%d+) ')
    -- No owner at all: nobody else holds it, so this result is not lost either.
    if held == nil or held == l then
      redis.call('HSET', done, id, node)
      redis.call('HDEL', owner, id)
      redis.call('ZREM', deadline, id)
      first = 1
      if hard == '1' then
        local fails = redis.call('INCR', p .. ':fails')
        redis.call('EXPIRE', p .. ':fails', ttl)
        if maxfail > 0 and fails >= maxfail and redis.call('EXISTS', p .. ':stop') == 0 then
          local what = fails == 1 and 'hard failure' or 'hard failures'
          redis.call('SET', p .. ':stop', fails .. ' ' .. what .. ' reached --maxfail=' ..
            maxfail .. ' (node ' .. node .. ')', 'EX', ttl)
        end
      end
    end
  end
  out[#out + 1] = first
end
redis.call('EXPIRE', p .. ':runs', ttl)
redis.call('EXPIRE', done, ttl)
return out
