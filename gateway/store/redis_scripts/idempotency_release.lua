-- Drop an in-flight lock, only if it is still ours (same fingerprint, not yet done).
local existing = redis.call('HMGET', KEYS[1], 'state', 'fp')
if existing[1] == 'in_flight' and existing[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
