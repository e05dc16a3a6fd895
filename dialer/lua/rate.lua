-- Reserve one creation slot under the trunk's and the account's rate limits, all or none: the
-- answer is when the create may be sent. One call of this script per create, however long the wait:
-- waiting jobs no longer ask again and again, all together, each time a token frees.
-- KEYS: 1 clock, 2 trunk rate (GCRA), 3 account per-second log (ZSET of reserved send times),
--       4 account per-minute log (ZSET), 5 trunk hold, 6 account hold, 7 trunk unsent,
--       8 trunk held legs (ZSET, constants.trunk_held_legs)
-- ARGV: 1 trunk interval ms, 2 trunk burst, 3 account interval ms, 4 account per minute (0 = none),
--       5 attempt id, 6 longest wait worth reserving, ms (absent or negative = any)
-- An account interval of 0 reserves a send that is not an Ultravox create (a phone leg placed again
-- after the provider's 429, ARGV[5] its leg member): only the trunk's limit applies and the account's
-- limits are left alone. Such legs go before new dials: while any waits in the trunk's held-legs set,
-- new dials reserve nothing (their Ultravox calls are not made yet; the held legs' calls are waiting).
-- Returns 0: send now; > 0: reserved, send after that many ms; < 0: nothing reserved (a hold, or a
-- wait longer than ARGV[6]), ask again after that many ms at the earliest.
--
-- A reservation is recorded in the trunk's unsent ZSET as "<attempt id>@rate", scored by its send
-- time: until then it still counts as claimed-but-unsent, so the pacer never claims more than the
-- unsent cap (a quarter second of the rate) ahead of what the trunk can send, and reservations stay
-- short. The claim script drops it once its time has passed. Nothing is ever given back: a
-- reservation that goes unused leaves an empty slot, which can only make the traffic sparser; giving
-- slots back would let later creates bunch into the freed time next to those already reserved after it.
--
-- The account's per-second limit is a spacing of one account interval between any two Ultravox
-- creates, kept as a log of reserved send times rather than one theoretical arrival time: a slow
-- trunk's reservation far ahead then holds only its own slot, where a single arrival time moved to
-- it would hold every other trunk of the account back until that send (issue 14's e2e test found it).
local now = now_ms()
local trunk_interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local account_interval, per_minute = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_wait = tonumber(ARGV[6] or '-1')
local is_leg = account_interval == 0

-- a held leg told to wait stays first in line for when it may go
local function not_yet(wait)
  if is_leg and redis.call('ZSCORE', KEYS[8], ARGV[5]) then
    redis.call('ZADD', KEYS[8], now + wait, ARGV[5])
    keep_for(KEYS[8], wait + LEG_GRACE_MS)
  end
  return -wait
end

for _, hold in ipairs({KEYS[5], KEYS[6]}) do
  local ttl = redis.call('PTTL', hold)
  if ttl > 0 then return not_yet(ttl) end
end
if not is_leg then
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - LEG_GRACE_MS)
  if redis.call('EXISTS', KEYS[8]) == 1 then return -math.max(50, math.ceil(trunk_interval)) end
end
local member = ARGV[5] .. '@rate'
local trunk_tat = tonumber(redis.call('GET', KEYS[2]) or now)

local function close_to(a, b) return math.abs(a - b) < 0.01 end

-- Asked again for an attempt that already holds a reservation (a rerun of this script, or a second
-- create try): a reservation still ahead is answered as it stands. One whose time has passed is
-- moved to now when it is still the trunk's newest (nothing reserved after it can bunch with it;
-- the account's log is searched for a free slot around it anyway); otherwise it stays spent and a
-- new one is made below.
local held = tonumber(redis.call('ZSCORE', KEYS[7], member))
if held then
  if held >= now then return math.ceil(held - now) end
  redis.call('ZREM', KEYS[7], member)
  if close_to(trunk_tat, held + trunk_interval) then
    trunk_tat = held
    redis.call('ZREM', KEYS[3], ARGV[5] .. '@' .. held)
    if per_minute > 0 then redis.call('ZREM', KEYS[4], ARGV[5] .. '@' .. held) end
  end
end

-- GCRA: the theoretical arrival time (tat) advances one interval per create; a create may go at
-- send_at when tat is then no more than (burst - 1) intervals ahead of it.
if trunk_tat < now then trunk_tat = now end
local send_at = math.max(now, trunk_tat + trunk_interval - trunk_interval * burst)
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 60000)
  local count = redis.call('ZCARD', KEYS[4])
  if count >= per_minute then
    -- no more than per_minute creates in any minute: wait for the one per_minute places back
    local bound = redis.call('ZRANGE', KEYS[4], count - per_minute, count - per_minute, 'WITHSCORES')
    send_at = math.max(send_at, tonumber(bound[2]) + 60000)
  end
end
send_at = math.ceil(send_at)
if account_interval > 0 then
  -- the earliest time from send_at at least one account interval away from every reserved send
  -- (the log is sorted, so one pass moves past each conflicting slot in turn)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - account_interval)
  local near = redis.call('ZRANGEBYSCORE', KEYS[3], math.floor(send_at - account_interval), '+inf', 'WITHSCORES')
  for i = 2, #near, 2 do
    local reserved = tonumber(near[i])
    if reserved >= send_at + account_interval then break end
    if reserved > send_at - account_interval then send_at = math.ceil(reserved + account_interval) end
  end
end
local wait = send_at - now
if max_wait >= 0 and wait > max_wait then return not_yet(math.max(1, wait)) end

trunk_tat = math.max(trunk_tat, send_at) + trunk_interval
redis.call('SET', KEYS[2], trunk_tat, 'PX', math.ceil(trunk_tat - now) + 1000)
if account_interval > 0 then
  redis.call('ZADD', KEYS[3], send_at, ARGV[5] .. '@' .. send_at)
  local expires = math.ceil(wait + account_interval) + 1000
  if redis.call('PTTL', KEYS[3]) < expires then redis.call('PEXPIRE', KEYS[3], expires) end
end
if per_minute > 0 then
  redis.call('ZADD', KEYS[4], send_at, ARGV[5] .. '@' .. send_at)
  redis.call('PEXPIRE', KEYS[4], math.max(61000, wait + 61000))
end
redis.call('ZREM', KEYS[7], ARGV[5])
redis.call('ZADD', KEYS[7], send_at, member)
if redis.call('PTTL', KEYS[7]) < wait + 1000 then redis.call('PEXPIRE', KEYS[7], wait + 1000) end
return wait
