-- A dial job starts: check the attempt is still ours and may go ahead, renew (or retake) its slots,
-- and record the attempt as 'creating' BEFORE any request is sent, so no rerun can dial it blindly.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 due, 6 trunk slots, 7 account slots,
--       8 trunk unsent, 9 claimed, 10 dnc, 11 trunk campaigns, 12 contacts, 13 account hold,
--       14 ambiguous attempts, 15.. the outbox tail (dialer/outbox.py)
-- ARGV: 1 campaign name, 2 number, 3 attempt, 4 job ref, 5 trunk limit, 6 account limit,
--       7 lease ms, 8 lease ms of an ambiguous attempt (its call may be live: as long as a call),
--       9.. the outbox tail
-- Returns {verdict, now, contact, progress}; verdict is one of
--   go | ambiguous (a previous run may have created the call) | stale | paused | held (account or
--   campaign fault: handed back unspent) | cancelled | dnc | no_slot
local now = now_ms()
local number, attempt = ARGV[2], tonumber(ARGV[3])
local attempt_id = ARGV[1] .. ':' .. number .. ':' .. attempt
local progress = get_json(KEYS[3], number)
if not progress or progress.c ~= attempt or progress.s ~= 'dialing' then
  redis.call('ZREM', KEYS[9], ARGV[4])
  return {'stale', now}
end
local record = get_json(KEYS[4], number .. ':' .. attempt)
if record and record.st ~= 'creating' then
  redis.call('ZREM', KEYS[9], ARGV[4])
  return {'stale', now}
end
-- A record of this version (v) without 'sent' never reached send.lua: nothing went out, so the
-- attempt simply starts again (a record without v predates the marker and stays ambiguous).
if record and record.v and not record.sent then
  redis.call('HDEL', KEYS[4], number .. ':' .. attempt)
  if progress.ts and progress.ts[#progress.ts] == record.t0 then table.remove(progress.ts) end
  record = nil
end

local function release()
  redis.call('ZREM', KEYS[6], attempt_id)
  redis.call('ZREM', KEYS[7], attempt_id)
  redis.call('ZREM', KEYS[8], attempt_id)
  redis.call('ZREM', KEYS[9], ARGV[4])
end

-- Give the contact back untouched (no attempt spent) and answer ``verdict``.
local function put_back(verdict)
  release()
  progress.c = 0
  set_status(KEYS[2], progress, progress.w or 'pending')
  set_json(KEYS[3], number, progress)
  redis.call('ZADD', KEYS[5], now, number)
  return {verdict, now}
end

local state = redis.call('HGET', KEYS[2], 'state')
local blocked = redis.call('SISMEMBER', KEYS[10], number) == 1
-- An attempt whose create may already have gone out is resolved first, whatever else changed.
if not record then
  if state == 'cancelled' or blocked then
    release()
    progress.c = 0
    progress.o = (blocked and 'dnc') or 'cancelled'
    set_status(KEYS[2], progress, 'done')
    redis.call('HINCRBY', KEYS[2], 'o:' .. progress.o, 1)
    set_json(KEYS[3], number, progress)
    -- the contact closes without a call: its event in this same step, like finish.lua's
    if outbox_open(15, 9) then
      local contact = get_json(KEYS[12], number) or {}
      outbox_append('contact.completed', ARGV[1] .. ':' .. number, {campaign = ARGV[1], contact_id = contact.i,
                    phone = number, final_outcome = progress.o, attempts = progress.a or 0}, now)
    end
    maybe_complete(KEYS[2], KEYS[11], ARGV[1])
    return {progress.o, now}
  end
  if state ~= 'active' then return put_back('paused') end
  -- an account or agent fault holds the attempt, whoever claimed it before the fault was seen
  local hold = redis.call('GET', KEYS[13])
  if redis.call('HEXISTS', KEYS[2], 'fault') == 1 or (hold and string.sub(hold, 1, 6) == 'fault:') then
    return put_back('held')
  end
end

local lease = now + tonumber(record and ARGV[8] or ARGV[7])
for index, key in ipairs({KEYS[6], KEYS[7]}) do
  local limit = tonumber(ARGV[4 + index])
  if limit > 0 and not redis.call('ZSCORE', key, attempt_id) and free_slots(key, limit, now) <= 0 then
    if record then return {'wait', now} end  -- ambiguous: keep it, never re-dial it
    return put_back('no_slot')
  end
  hold_slot(key, limit, attempt_id, lease)
end
redis.call('ZREM', KEYS[9], ARGV[4])

local verdict = 'ambiguous'
if record and not record.amb then
  -- the quarantine of an ambiguous create runs from the first time it is seen as ambiguous
  record.amb = now
  set_json(KEYS[4], number .. ':' .. attempt, record)
  redis.call('ZADD', KEYS[14], now, attempt_id)
end
if not record then
  verdict = 'go'
  set_json(KEYS[4], number .. ':' .. attempt, {st = 'creating', t0 = now, v = 2})
  progress.ts = progress.ts or {}
  table.insert(progress.ts, now)
  set_json(KEYS[3], number, progress)
end
return {verdict, now, redis.call('HGET', KEYS[12], number) or '',
        cjson.encode(progress)}
