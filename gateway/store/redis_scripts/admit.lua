-- GCRA admission with reservation (see gcra.py, the same function in Python).
-- KEYS[1]      pause-until key of the API key (upstream 429 Retry-After), microseconds
-- KEYS[2..n]   theoretical-arrival-time key of each bucket, microseconds
-- ARGV[1]      max wait, microseconds
-- ARGV[2..n]   emission interval of each bucket, microseconds
-- Returns {granted (1|0), wait_us}. Redis' clock is the one clock every replica shares.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = now
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > start then start = pause end
for i = 2, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat > start then start = tat end
end
local wait = start - now
if wait > tonumber(ARGV[1]) then
  return {0, wait}
end
for i = 2, #KEYS do
  local nxt = start + tonumber(ARGV[i])
  redis.call('SET', KEYS[i], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
end
return {1, wait}
