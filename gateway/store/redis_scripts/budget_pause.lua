-- An upstream 429 (rolling_budget.pause): no admission on the key for ARGV[1] µs, on Redis' clock,
-- never shortening a longer pause. KEYS[1] is the key's state hash (budget_admit.lua).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
if until_us > current then
  redis.call('HSET', KEYS[1], 'pause', string.format('%.0f', until_us))
  if redis.call('PTTL', KEYS[1]) < math.ceil(tonumber(ARGV[1]) / 1000) + 60000 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000) + 60000)
  end
end
return 1
