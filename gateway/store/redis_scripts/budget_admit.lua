-- The rate-budget algorithm (rolling_budget.py, the same function in Python), on Redis' clock.
-- KEYS[1]  the key's admission log: sorted set, score = time (µs), member = "<seq>:<client>"
-- KEYS[2]  the key's state hash: seq, tat, pause, cap_left, cap_until, and per client
--          a:<c> admitted in window, d:<c> demand, t:<c> last ask, s:<c> since, w:<c> share
-- ARGV     client, limit, burst, share, client_limit (0 none), fair (0|1), window_us,
--          interval_us, first (0|1), min_age_us, headroom
-- Returns  {granted (1|0), wait_us, limit ("key"|"client"|"share"|""), used, seq, now_us}
local log, st = KEYS[1], KEYS[2]
local me, limit, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local share, client_limit, fair = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
local window, interval, first = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
local min_age, headroom = tonumber(ARGV[10]), tonumber(ARGV[11])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cutoff = now - window
local function us(x) return string.format('%.0f', x) end

for _, member in ipairs(redis.call('ZRANGEBYSCORE', log, '-inf', us(cutoff))) do
  local gone = string.sub(member, string.find(member, ':', 1, true) + 1)
  if redis.call('HEXISTS', st, 't:' .. gone) == 1 then
    redis.call('HINCRBY', st, 'a:' .. gone, -1)
  end
end
redis.call('ZREMRANGEBYSCORE', log, '-inf', us(cutoff))

local raw = redis.call('HGETALL', st)
local key, clients = {}, {}
for i = 1, #raw, 2 do
  local field, value = raw[i], raw[i + 1]
  local kind, name = string.match(field, '^(%a):(.*)$')
  if kind then
    clients[name] = clients[name] or {a = 0, d = 0, t = now, s = now, w = 1}
    clients[name][kind] = tonumber(value)
  else
    key[field] = tonumber(value)
  end
end
local seq, tat = key.seq or 0, key.tat or 0
local pause, cap_left, cap_until = key.pause or 0, key.cap_left or 0, key.cap_until or 0

local mine = clients[me]
if mine == nil then
  mine = {a = 0, d = 0, t = now, s = now, w = share}
  clients[me] = mine
end
if first then
  mine.d = mine.d * math.exp(-(now - mine.t) / window) + 1
  redis.call('HSET', st, 'd:' .. me, string.format('%.17g', mine.d), 's:' .. me, us(mine.s))
end
mine.t, mine.w = now, share
redis.call('HSET', st, 't:' .. me, us(now), 'w:' .. me, string.format('%.17g', share))

local count = 0
for name, c in pairs(clients) do
  if c.t <= cutoff and c.a <= 0 then
    redis.call('HDEL', st, 'a:' .. name, 'd:' .. name, 't:' .. name, 's:' .. name, 'w:' .. name)
    clients[name] = nil
  else
    count = count + 1
  end
end

local used = redis.call('ZCARD', log)
local precedence = {key = 0, share = 1, client = 2}
local held, wait, why = false, 0, ''
local function hold(w, reason)
  if not held or w > wait or (w == wait and precedence[reason] > precedence[why]) then
    held, wait, why = true, w, reason
  end
end
local function nth_time(index) -- 0-based, oldest first
  return tonumber(redis.call('ZRANGE', log, index, index, 'WITHSCORES')[2])
end

if pause > now then hold(pause - now, 'key') end
if cap_until > now and cap_left <= 0 then hold(cap_until - now, 'key') end
if client_limit > 0 and mine.a >= client_limit then
  local own = {}
  local entries = redis.call('ZRANGEBYSCORE', log, '(' .. us(cutoff), '+inf', 'WITHSCORES')
  for i = 1, #entries, 2 do
    local member = entries[i]
    if string.sub(member, string.find(member, ':', 1, true) + 1) == me then
      own[#own + 1] = tonumber(entries[i + 1])
    end
  end
  hold(own[mine.a - client_limit + 1] + window - now, 'client')
end
if used >= limit then hold(nth_time(used - limit) + window - now, 'key') end
local tolerance = (math.min(burst, limit) - 1) * interval
if tat - tolerance > now then hold(tat - tolerance - now, 'key') end

if fair and count > 1 and used < limit then
  -- max-min split of the limit by share over the projected demands (water-filling)
  local left, alloc, remaining = {}, {}, limit
  for name, c in pairs(clients) do
    local decayed = c.d * math.exp(-(now - c.t) / window)
    local age = math.max(now - c.s, min_age)
    left[name] = headroom * decayed / (1 - math.exp(-age / window))
  end
  while next(left) ~= nil do
    local weights = 0
    for name in pairs(left) do weights = weights + clients[name].w end
    local unit = remaining / weights
    local satisfied = {}
    for name, d in pairs(left) do
      if d <= unit * clients[name].w then satisfied[#satisfied + 1] = name end
    end
    if #satisfied == 0 then
      for name in pairs(left) do alloc[name] = unit * clients[name].w end
      break
    end
    for _, name in ipairs(satisfied) do
      alloc[name] = left[name]
      remaining = remaining - left[name]
      left[name] = nil
    end
  end
  -- a whole unspent slot of its own allocation takes any free slot; else only a spare one
  if mine.a + 1 > alloc[me] then
    local others = 0
    for name, c in pairs(clients) do
      if name ~= me then others = others + math.max(0, alloc[name] - c.a) end
    end
    if used + 1 + others > limit then
      local next_expiry = interval
      if used > 0 then next_expiry = nth_time(0) + window - now end
      hold(next_expiry, 'share')
    end
  end
end

local keep = math.max(window, pause - now, cap_until - now) + 60000000
if held then
  redis.call('PEXPIRE', st, math.ceil(keep / 1000))
  return {0, us(math.max(wait, 1)), why, used, 0, us(now)}
end

seq = seq + 1
redis.call('ZADD', log, us(now), seq .. ':' .. me)
redis.call('HINCRBY', st, 'a:' .. me, 1)
local new_tat = math.max(tat, now) + interval
local fields = {'seq', seq, 'tat', us(new_tat)}
if cap_until > now then
  fields[#fields + 1] = 'cap_left'
  fields[#fields + 1] = cap_left - 1
end
redis.call('HSET', st, unpack(fields))
redis.call('PEXPIRE', st, math.ceil(keep / 1000))
redis.call('PEXPIRE', log, math.ceil(window / 1000) + 1000)
return {1, 0, '', used + 1, seq, us(now)}
