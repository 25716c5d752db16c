-- KEYS[1] the idempotency record; ARGV[1] fingerprint; ARGV[2] stored response; ARGV[3] TTL, ms.
redis.call('HSET', KEYS[1], 'state', 'done', 'fp', ARGV[1], 'response', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
