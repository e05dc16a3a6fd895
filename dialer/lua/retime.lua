-- Apply a campaign update to one batch of waiting contacts: move each to its new due instant, or
-- close it when the new retry policy leaves it no further attempt. A contact is touched only if it
-- is still waiting exactly as it was read (same due score, status pending or retry_wait): one that a
-- worker claimed, or whose attempt ended and was rescheduled meanwhile, is left to that worker.
-- KEYS: 1 clock, 2 campaign, 3 due, 4 progress, 5 trunk campaigns, 6 contacts, 7.. the outbox tail
-- ARGV: 1 campaign name, 2 n = length of the outbox tail, 3..2+n the outbox tail (dialer/outbox.py),
--       then triples: number, due score as read, new due ms or 'close'
-- Returns {moved, closed, skipped}.
local moved, closed, skipped = 0, 0, 0
local tail = tonumber(ARGV[2])
-- a contact closed here announces itself like one closed by finish.lua, in this same step
local events = tail > 0 and outbox_open(7, 3)
local now = now_ms()
for i = 3 + tail, #ARGV, 3 do
  local number, seen, action = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local score = redis.call('ZSCORE', KEYS[3], number)
  local progress = get_json(KEYS[4], number) or {s = 'pending', a = 0}
  if not score or tonumber(score) ~= seen or (progress.s ~= 'pending' and progress.s ~= 'retry_wait') then
    skipped = skipped + 1
  elseif action == 'close' then
    -- the last attempt's outcome becomes final, as if the policy had said so when it ended
    redis.call('ZREM', KEYS[3], number)
    progress.o, progress.c = progress.lo or 'cancelled', 0
    set_status(KEYS[2], progress, 'done')
    set_json(KEYS[4], number, progress)
    redis.call('HINCRBY', KEYS[2], 'o:' .. progress.o, 1)
    if events then
      local contact = get_json(KEYS[6], number) or {}
      outbox_append('contact.completed', ARGV[1] .. ':' .. number, {campaign = ARGV[1], contact_id = contact.i,
                    phone = number, final_outcome = progress.o, attempts = progress.a or 0}, now)
    end
    closed = closed + 1
  else
    moved = moved + redis.call('ZADD', KEYS[3], 'XX', 'CH', tonumber(action), number)
  end
end
if closed > 0 then maybe_complete(KEYS[2], KEYS[5], ARGV[1]) end
return {moved, closed, skipped}
