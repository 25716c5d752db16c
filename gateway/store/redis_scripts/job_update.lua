-- An async job's entry (stages/jobs.py): KEYS[1] a hash; ARGV polls to add, TTL (ms), then
-- field/value pairs. Once "final" is set the job never goes back: only its links may change.
local final = redis.call('HEXISTS', KEYS[1], 'final') == 1
for i = 3, #ARGV, 2 do
  local field = ARGV[i]
  if field == 'finishedAt' then
    redis.call('HSETNX', KEYS[1], field, ARGV[i + 1])  -- the first to learn the end knows when
  elseif not final or field == 'requestId' or field == 'bookingId' then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
  end
end
redis.call('HINCRBY', KEYS[1], 'polls', tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
