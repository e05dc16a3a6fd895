-- A contact calls back: check the campaign still takes its call-backs, and record the inbound call
-- (and the tracker's member for it) in the same step as the answer is decided.
-- KEYS: 1 clock, 2 campaign, 3 contacts, 4 progress, 5 inbound calls, 6 tracking
-- ARGV: 1 number, 2 call-back id, 3 dialled at ms (index), 4 routing window after the end (ms),
--       5 first poll delay ms, 6 attempt id (index), 7 tracking member
-- Returns {verdict, now, contact JSON, progress JSON}; verdict is route | ended (the campaign ended
-- longer ago than its window: campaign hash field 'ended', Redis ms) | gone (campaign or contact deleted)
local now = now_ms()
local number = ARGV[1]
local state = redis.call('HGET', KEYS[2], 'state')
local contact = redis.call('HGET', KEYS[3], number)
if not state or not contact then return {'gone', now} end
if state == 'completed' or state == 'cancelled' then
  -- the window counts from the campaign's end (maybe_complete / lifecycle.lua record it); a campaign
  -- that ended before ends were recorded counts from the contact's last dial
  local ended = tonumber(redis.call('HGET', KEYS[2], 'ended') or ARGV[3])
  if now > ended + tonumber(ARGV[4]) then return {'ended', now} end
end
-- a contact not claimed yet has no progress record (claim.lua starts it the same way)
local progress = get_json(KEYS[4], number) or {s = 'pending', a = 0}
set_json(KEYS[5], ARGV[2], {n = number, st = 'routed', t0 = now, a = ARGV[6]})
schedule_at(KEYS[6], now + tonumber(ARGV[5]), ARGV[7], now)
redis.call('HINCRBY', KEYS[2], 'ib:routed', 1)
progress.ib = (progress.ib or 0) + 1
progress.ibt = now
set_json(KEYS[4], number, progress)
return {'route', now, contact, cjson.encode(progress)}
