-- Accept an event once: dedupe and enqueue atomically, so two replicas receiving the
-- same eventId at once deliver it once.
-- KEYS: seen key, events hash, due zset.  ARGV: eventId, blob, dedupe TTL s, due (wall s).
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
