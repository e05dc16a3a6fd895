-- The create is about to be sent (its rate slot has come): the last checks, and the attempt marked as
-- possibly sent. An opt-out, a pause, a cancel or an answered call-back that landed while the job
-- waited for its rate slot stops the create here. A rerun finds 'sent' only on attempts whose create
-- may have gone out: only those are ambiguous (looked up, quarantined); the others simply start again.
-- The call-back index (number -> this campaign and contact) is written in the same step, so a
-- contact who rings back the caller id we are about to show is always routed to this campaign.
-- KEYS: 1 clock, 2 campaign, 3 attempts, 4 dnc, 5 progress, 6 call-back index entry of the number
-- ARGV: 1 number, 2 attempt, 3 campaign name, 4 contact id, 5 caller id shown, 6 index retention ms
--       (0 = no index), 7 trunk name (recorded on the attempt with the caller id, for the export)
-- Returns go | dnc | paused | cancelled | closed | stale
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
