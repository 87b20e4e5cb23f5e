-- Append one run's outcomes to a project's history (the shared queue's form of
-- shardex_core::history), keeping each test's last `keep` runs.
-- KEYS[1] = tests (hash: test -> lines "<run id> <letter> <secs>"), KEYS[2] = runs (zset of
-- "<run id> <code>" by unix time), KEYS[3] = failures (hash: test -> "<unix secs> <message>").
-- ARGV: run member, at, ttl_secs, keep, runs_kept, then triples id, line, message ('' when
-- the test did not fail). Read-modify-write in one script: nodes of a job append at once.
local member, at, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local keep, runs_kept = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], at, member)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(runs_kept + 1))
local ids = {}
for i = 6, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
if #ids > 0 then
  local olds = redis.call('HMGET', KEYS[1], unpack(ids))
  local set, fails = {}, {}
  for k, id in ipairs(ids) do
    local line, message = ARGV[4 + 3 * k], ARGV[5 + 3 * k]
    local v = line
    if olds[k] then v = olds[k] .. '\n' .. line end
    local _, n = string.gsub(v, '\n', '')
    while n >= keep do
      v = string.sub(v, string.find(v, '\n', 1, true) + 1)
      n = n - 1
    end
    set[#set + 1] = id
    set[#set + 1] = v
    if message ~= '' then
      fails[#fails + 1] = id
      fails[#fails + 1] = at .. ' ' .. message
    end
  end
  redis.call('HSET', KEYS[1], unpack(set))
  if #fails > 0 then redis.call('HSET', KEYS[3], unpack(fails)) end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return 1
