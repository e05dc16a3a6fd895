-- Close up to ARGV[2] not-yet-dialled contacts of a cancelled campaign with outcome 'cancelled'.
-- KEYS: 1 clock, 2 campaign, 3 due, 4 progress, 5 trunk campaigns, 6 contacts, 7.. the outbox tail
-- ARGV: 1 campaign name, 2 batch size, 3.. the outbox tail. Returns how many contacts were closed.
local popped = redis.call('ZPOPMIN', KEYS[3], tonumber(ARGV[2]))
local closed = 0
-- each closed contact's contact.completed in this same step (dialer/outbox.py)
local events = outbox_open(7, 3)
local now = now_ms()
for i = 1, #popped, 2 do
  local number = popped[i]
  local progress = get_json(KEYS[4], number) or {s = 'pending', a = 0}
  progress.o, progress.c = 'cancelled', 0
  set_status(KEYS[2], progress, 'done')
  set_json(KEYS[4], number, progress)
  redis.call('HINCRBY', KEYS[2], 'o:cancelled', 1)
  if events then
    local contact = get_json(KEYS[6], number) or {}
    outbox_append('contact.completed', ARGV[1] .. ':' .. number, {campaign = ARGV[1], contact_id = contact.i,
                  phone = number, final_outcome = 'cancelled', attempts = progress.a or 0}, now)
  end
  closed = closed + 1
end
if closed == 0 then
  -- nothing left to close: let the campaign count as finished once its calls in flight end
  redis.call('SREM', KEYS[5], ARGV[1])
end
return closed
