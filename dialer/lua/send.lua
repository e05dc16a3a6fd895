-- The create is about to be sent (its rate slot has come): the last checks, and the attempt marked as
-- possibly sent. An opt-out, a pause or a cancel that landed while the job waited for its rate slot
-- stops the create here. A rerun finds 'sent' only on attempts whose create may have gone out: only
-- those are ambiguous (looked up, quarantined); the others simply start again.
-- KEYS: 1 clock, 2 campaign, 3 attempts, 4 dnc
-- ARGV: 1 number, 2 attempt
-- Returns go | dnc | paused | cancelled | stale
local now = now_ms()
local field = ARGV[1] .. ':' .. ARGV[2]
local record = get_json(KEYS[3], field)
if not record or record.st ~= 'creating' then return 'stale' end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return 'dnc' end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'cancelled' then return 'cancelled' end
if state ~= 'active' then return 'paused' end
if not record.sent then
  record.sent = now
  set_json(KEYS[3], field, record)
end
return 'go'
