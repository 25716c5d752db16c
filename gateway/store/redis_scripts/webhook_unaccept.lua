-- Take back an acceptance the replicas did not confirm (webhook_ack_replicas): the sender is
-- answered 503 and retries, and its retry must be accepted afresh, not called a duplicate.
-- KEYS: seen key, events hash, due zset.  ARGV: eventId.
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
