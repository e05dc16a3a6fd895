-- Close up to ARGV[2] not-yet-dialled contacts of a cancelled campaign with outcome 'cancelled'.
-- KEYS: 1 clock, 2 campaign, 3 due, 4 progress, 5 trunk campaigns
-- ARGV: 1 campaign name, 2 batch size. Returns how many contacts were closed.
local popped = redis.call('ZPOPMIN', KEYS[3], tonumber(ARGV[2]))
local closed = 0
for i = 1, #popped, 2 do
  local number = popped[i]
  local progress = get_json(KEYS[4], number) or {s = 'pending', a = 0}
  progress.o, progress.c = 'cancelled', 0
  set_status(KEYS[2], progress, 'done')
  set_json(KEYS[4], number, progress)
  redis.call('HINCRBY', KEYS[2], 'o:cancelled', 1)
  closed = closed + 1
end
if closed == 0 then
  -- nothing left to close: let the campaign count as finished once its calls in flight end
  redis.call('SREM', KEYS[5], ARGV[1])
end
return closed
