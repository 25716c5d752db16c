-- A shared read's lookup (stages/reads/): KEYS[1] the scope's generation, KEYS[2] the entry (a hash:
-- g generation, t stored at (store seconds), b the answer). Returns {generation, 1, answer, age}
-- for an entry stored under the current generation, else {generation, 0}. Age is a string: Lua
-- numbers come back as integers.
local generation = tonumber(redis.call('GET', KEYS[1]) or '0')
local entry = redis.call('HMGET', KEYS[2], 'g', 't', 'b')
if entry[1] and tonumber(entry[1]) == generation and entry[3] then
  local now = redis.call('TIME')
  local age = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(entry[2])
  return {generation, 1, entry[3], tostring(age)}
end
return {generation, 0}
