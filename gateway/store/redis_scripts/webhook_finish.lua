-- Acknowledge a delivery round. KEYS: due zset, events hash, dead zset.
-- ARGV: eventId, outcome (done | retry | dead), blob, score (next due, or dead-at).
if ARGV[2] == 'done' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[2] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
end
return 1
