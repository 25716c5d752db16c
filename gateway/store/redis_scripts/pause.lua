-- Pause an API key until now + ARGV[1] microseconds, never shortening a longer pause.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause_until = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause_until > current then
  redis.call('SET', KEYS[1], string.format('%.0f', pause_until), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
