-- A leader's answer: KEYS[1] generation, KEYS[2] entry, KEYS[3] the scope's entry index,
-- KEYS[4] the claim, KEYS[5] the leader's answer for its followers.
-- ARGV generation, leader, answer, answer TTL (ms), entry ('' = not cached), entry TTL (ms).
-- The entry is kept only if no invalidation came since the call was sent (same generation).
redis.call('SET', KEYS[5], ARGV[3], 'PX', tonumber(ARGV[4]))
if redis.call('GET', KEYS[4]) == ARGV[2] then
  redis.call('DEL', KEYS[4])
end
if ARGV[5] == '' or tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], 'g', ARGV[1], 't', now[1] .. '.' .. string.format('%06d', tonumber(now[2])), 'b', ARGV[5])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]))
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
end
return 1
