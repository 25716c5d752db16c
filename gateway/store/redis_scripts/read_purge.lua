-- Drop a scope's entries: KEYS[1] generation, KEYS[2] the entry index (same hash tag, so the
-- entries it names sit in this slot too). Bumps the generation, so a call in flight stores nothing.
-- Returns how many entries existed.
local entries = redis.call('SMEMBERS', KEYS[2])
local dropped = 0
for i = 1, #entries, 500 do
  dropped = dropped + redis.call('DEL', unpack(entries, i, math.min(i + 499, #entries)))
end
redis.call('DEL', KEYS[2])
redis.call('INCR', KEYS[1])
return dropped
