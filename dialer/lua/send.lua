-- The create is about to be sent (its rate slot has come): the last checks, and the attempt marked as
-- possibly sent. An opt-out, a pause, a cancel or an answered call-back that landed while the job
-- waited for its rate slot stops the create here. A rerun finds 'sent' only on attempts whose create
-- may have gone out: only those are ambiguous (looked up, quarantined); the others simply start again.
-- The call-back index (number -> this campaign and contact) is written in the same step, so a
-- contact who rings back the caller id we are about to show is always routed to this campaign.
-- Last, the trunk's 1-s window: the rate script spaced the reservations, but a job that woke late for
-- its slot (a busy event loop, a busy machine) sends closer to the next one than the spacing, and a
-- carrier counts calls per second in any 1-s window. The sends of the last window are logged here,
-- and a send that would be the (n+1)th in it waits until the oldest leaves. The window is 1 s widened
-- by the same safety margin as the rate's spacing, so the transport's jitter has the same room here.
-- KEYS: 1 clock, 2 campaign, 3 attempts, 4 dnc, 5 progress, 6 call-back index entry of the number,
--       7 trunk sends (ZSET of the last second's send times)
-- ARGV: 1 number, 2 attempt, 3 campaign name, 4 contact id, 5 caller id shown, 6 index retention ms
--       (0 = no index), 7 trunk name (recorded on the attempt with the caller id, for the export),
--       8 sends allowed in any 1 s (0 = no window check), 9 window ms (1000 widened by the margin)
-- Returns go | dnc | paused | cancelled | closed | stale | wait:<ms> (nothing written: ask again then)
local now = now_ms()
local field = ARGV[1] .. ':' .. ARGV[2]
local record = get_json(KEYS[3], field)
if not record or record.st ~= 'creating' then return 'stale' end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return 'dnc' end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'cancelled' then return 'cancelled' end
if state ~= 'active' then return 'paused' end
-- the contact called back and was answered meanwhile (callback_track.lua): never dial it again
local progress = get_json(KEYS[5], ARGV[1])
if progress and progress.cbk then return 'closed' end
local per_second = tonumber(ARGV[8] or '0') or 0
if per_second > 0 then
  local window = math.ceil(tonumber(ARGV[9] or '1000'))
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - window)
  if redis.call('ZCARD', KEYS[7]) >= per_second then
    local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
    return 'wait:' .. math.max(1, tonumber(oldest[2]) + window - now + 1)
  end
  redis.call('ZADD', KEYS[7], now, ARGV[3] .. ':' .. field .. '@' .. now)
  redis.call('PEXPIRE', KEYS[7], window + 1000)
end
if not record.sent then
  record.sent = now
  if ARGV[7] and ARGV[7] ~= '' then record.trunk = ARGV[7] end
  if ARGV[5] ~= '' then record.from = ARGV[5] end
  set_json(KEYS[3], field, record)
end
local retention = tonumber(ARGV[6] or '0') or 0
if retention > 0 then
  redis.call('SET', KEYS[6], cjson.encode({c = ARGV[3], i = ARGV[4], a = ARGV[3] .. ':' .. field,
                                          f = ARGV[5], t = now}), 'PX', math.floor(retention))
end
return 'go'
