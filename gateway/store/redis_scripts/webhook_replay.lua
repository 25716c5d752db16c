-- Move a dead letter back to the queue. KEYS: due zset, events hash, dead zset.
-- ARGV: eventId, blob (attempts and horizon reset), due (wall s).
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
