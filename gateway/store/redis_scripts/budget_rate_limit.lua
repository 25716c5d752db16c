-- The upstream's rate-limit headers (rolling_budget.rate_limit_seen), on Redis' clock.
-- KEYS[1] the key's state hash (budget_admit.lua); ARGV: remaining, reset (µs from now),
-- the seq of the admission whose answer carried them, the next-window slack (µs).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + math.max(0, tonumber(ARGV[2]))
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local left = tonumber(ARGV[1]) - math.max(0, seq - tonumber(ARGV[3]))
local cap_left = tonumber(redis.call('HGET', KEYS[1], 'cap_left') or '0')
local cap_until = tonumber(redis.call('HGET', KEYS[1], 'cap_until') or '0')
if cap_until <= now or until_us > cap_until + tonumber(ARGV[4]) then
  cap_left, cap_until = left, until_us
else
  cap_left, cap_until = math.min(cap_left, left), math.max(cap_until, until_us)
end
redis.call('HSET', KEYS[1], 'cap_left', cap_left, 'cap_until', string.format('%.0f', cap_until))
local ttl = math.ceil((cap_until - now) / 1000) + 60000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
