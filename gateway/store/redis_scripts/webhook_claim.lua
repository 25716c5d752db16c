-- Lease up to ARGV[3] due events until ARGV[2]: a worker that dies mid-delivery lets its
-- lease lapse and the event becomes due again (the acknowledgement is webhook_finish).
-- KEYS: due zset, events hash.  ARGV: now, lease until, limit.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', KEYS[2], id)
  if blob then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, blob)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
