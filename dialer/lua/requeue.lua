-- Reopen contacts that ended with one outcome (e.g. 'failed' while the API key was wrong), for a
-- reason the operator has since fixed. Each gets a fresh attempt budget (attempts already made are
-- kept, numbered on, and no longer count), and is due at once: DNC, calling hours and the 24 h cap
-- still apply when it is dialled. A completed campaign becomes active again. A contact closed by
-- its answered call-back ('called_back') can be requeued too: it is dialled again.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 due, 6 trunk campaigns
-- ARGV: 1 campaign name, 2 outcome, 3 reason substring ('' = any), 4.. numbers
-- Returns the number of contacts reopened.
local now = now_ms()
local state = redis.call('HGET', KEYS[2], 'state')
if state ~= 'active' and state ~= 'paused' and state ~= 'completed' then return 0 end
local reopened = 0
for i = 4, #ARGV do
  local number = ARGV[i]
  local progress = get_json(KEYS[3], number)
  if progress and progress.s == 'done' and progress.o == ARGV[2] then
    local matches = ARGV[3] == ''
    if not matches then
      local record = get_json(KEYS[4], number .. ':' .. (progress.a or 0))
      matches = record ~= nil and type(record.r) == 'string' and string.find(record.r, ARGV[3], 1, true) ~= nil
    end
    if matches then
      redis.call('HINCRBY', KEYS[2], 'o:' .. progress.o, -1)
      progress.o = nil
      progress.b = progress.a or 0
      -- requeued on purpose: a contact closed by an answered call-back is dialled again (send.lua
      -- stops any attempt of a contact marked cbk); the call-back itself stays on record (ib*)
      progress.cbk = nil
      set_status(KEYS[2], progress, 'pending')
      set_json(KEYS[3], number, progress)
      redis.call('ZADD', KEYS[5], now, number)
      reopened = reopened + 1
    end
  end
end
if reopened > 0 then
  redis.call('HINCRBY', KEYS[2], 'requeued', reopened)
  if state == 'completed' then
    redis.call('HSET', KEYS[2], 'state', 'active')
    redis.call('HDEL', KEYS[2], 'ended')
  end
  if redis.call('HGET', KEYS[2], 'state') == 'active' then join_rotation(KEYS[6], ARGV[1]) end
end
return reopened
