-- KEYS[1] hash of breaker transitions; ARGV: name, at (wall s), state, origin.
-- Last writer wins by transition time, so a late message never undoes a newer one.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local at = tonumber(string.match(current, '^([^|]+)'))
  if at and at > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4])
return 1
