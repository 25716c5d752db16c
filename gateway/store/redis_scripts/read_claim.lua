-- One in-flight call per generation and key: KEYS[1] the claim; ARGV leader id, TTL (ms).
-- Returns '' when the caller now leads, else the leader already holding it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return ''
end
return redis.call('GET', KEYS[1]) or ''
