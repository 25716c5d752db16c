-- KEYS[1] the idempotency record; ARGV[1] fingerprint; ARGV[2] in-flight lock TTL, ms.
-- Returns {state, fingerprint, response|nil}; state 'new' means this caller now holds it.
local existing = redis.call('HMGET', KEYS[1], 'state', 'fp', 'response')
if existing[1] then
  return existing
end
redis.call('HSET', KEYS[1], 'state', 'in_flight', 'fp', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'new', ARGV[1], false}
