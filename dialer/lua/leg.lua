-- The provider phone leg of a direct-mode attempt (workers/phone_leg.py), recorded in the attempt
-- record's ``leg`` field so that a crash between the Ultravox create and the provider create never
-- yields a second phone call: 'placing' is written BEFORE the provider request, and from then on the
-- attempt is followed by its leg member (attempt|call|leg) instead of the plain call member.
-- A provider 429 proves nothing was placed: the leg goes 'held' and is placed again (within the
-- same attempt, after the trunk's hold) by the trackers, through 'placing' once more.
-- A held leg also waits in the trunk's held-legs ZSET, which keeps new dials back until it is placed
-- again (rate.lua): its Ultravox call is already waiting, and would stop waiting if new dials kept
-- taking the provider's few calls per second first.
-- KEYS: 1 clock, 2 attempts, 3 tracking, 4 trunk held legs
-- ARGV: 1 field (number:attempt), 2 action (placing | held | placed), 3 call id, 4 plain member,
--       5 leg member, 6 provider, 7 leg id (placed), 8 next poll ms (placing: first poll; held: the hold)
-- Returns {verdict, now, leg JSON}; verdict: placing (go ahead) | exists (a leg is already recorded:
-- look it up, never place another) | held | placed | gone (the attempt moved on or names another call)
local now = now_ms()
local record = get_json(KEYS[2], ARGV[1])
if not record or record.st ~= 'live' or record.call ~= ARGV[3] then
  redis.call('ZREM', KEYS[4], ARGV[5])
  return {'gone', now, ''}
end
if ARGV[2] == 'placing' then
  redis.call('ZREM', KEYS[4], ARGV[5])
  if record.leg and record.leg.st ~= 'held' then return {'exists', now, cjson.encode(record.leg)} end
  local tries = record.leg and record.leg.n or 0
  record.leg = {p = ARGV[6], st = 'placing', t = now, n = tries + 1}
  set_json(KEYS[2], ARGV[1], record)
  redis.call('ZREM', KEYS[3], ARGV[4])
  schedule_at(KEYS[3], now + tonumber(ARGV[8]), ARGV[5], now)
  return {'placing', now, cjson.encode(record.leg)}
end
if not record.leg then return {'gone', now, ''} end
if ARGV[2] == 'held' then
  -- only the request that was refused may say so: a leg placed or found meanwhile stays
  if record.leg.st ~= 'placing' then return {'exists', now, cjson.encode(record.leg)} end
  record.leg.st = 'held'
  set_json(KEYS[2], ARGV[1], record)
  local due = now + tonumber(ARGV[8])
  schedule_at(KEYS[3], due, ARGV[5], now)
  redis.call('ZADD', KEYS[4], due, ARGV[5])
  keep_for(KEYS[4], due - now + LEG_GRACE_MS)
  return {'held', now, cjson.encode(record.leg)}
end
-- placed: the provider answered with (or a lookup found) the leg's id
record.leg.st, record.leg.id = 'placed', ARGV[7]
record.pcall = ARGV[7]
set_json(KEYS[2], ARGV[1], record)
return {'placed', now, cjson.encode(record.leg)}
