-- Take one creation token from the trunk's and the account's rate limits, all or none, right
-- before the create request is sent (so nothing between the decision and the request can bunch
-- creations together).
-- KEYS: 1 clock, 2 trunk rate (GCRA), 3 account per-second rate (GCRA),
--       4 account per-minute log (ZSET), 5 trunk hold, 6 account hold, 7 trunk unsent
-- ARGV: 1 trunk interval ms, 2 trunk burst, 3 account interval ms, 4 account per minute (0 = none),
--       5 attempt id
-- Returns 0 when granted, otherwise the milliseconds to wait before asking again.
local now = now_ms()
for _, hold in ipairs({KEYS[5], KEYS[6]}) do
  local ttl = redis.call('PTTL', hold)
  if ttl > 0 then return ttl end
end

-- GCRA: the theoretical arrival time advances by one interval per call; a call is allowed while it
-- is no more than (burst - 1) intervals ahead of now.
local function gcra(key, interval, burst)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat + interval - interval * burst
  if now < allow_at then return math.ceil(allow_at - now), tat end
  return 0, tat + interval
end

local trunk_wait, trunk_tat = gcra(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
local account_wait, account_tat = gcra(KEYS[3], tonumber(ARGV[3]), 1)
local minute_wait = 0
local per_minute = tonumber(ARGV[4])
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[4]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    minute_wait = math.ceil(tonumber(oldest[2]) + 60000 - now)
  end
end
local wait = math.max(trunk_wait, account_wait, minute_wait)
if wait > 0 then return wait end

redis.call('SET', KEYS[2], trunk_tat, 'PX', math.ceil(trunk_tat - now) + 1000)
redis.call('SET', KEYS[3], account_tat, 'PX', math.ceil(account_tat - now) + 1000)
if per_minute > 0 then
  redis.call('ZADD', KEYS[4], now, ARGV[5] .. '@' .. now)
  redis.call('PEXPIRE', KEYS[4], 61000)
end
redis.call('ZREM', KEYS[7], ARGV[5])
return 0
