-- A half-open trial ended: drop its claim (KEYS[1]) if it is still the one ARGV[1] made, so the
-- next trial after the next reset timeout is not refused as "another replica is probing".
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
