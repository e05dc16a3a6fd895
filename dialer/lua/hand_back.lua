-- Give a claimed attempt back without spending it (Ultravox 429/503, pause, outside calling hours,
-- breaker open, create never sent): free its slots and make the contact due again.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 due, 6 trunk slots, 7 account slots,
--       8 trunk unsent, 9 claimed, 10 ambiguous attempts
-- ARGV: 1 campaign name, 2 number, 3 attempt, 4 job ref, 5 due at ms (0 = none), 6 delay ms
-- Returns 1 if handed back, 0 if the attempt was no longer this job's to give back.
local now = now_ms()
local number, attempt = ARGV[2], tonumber(ARGV[3])
local progress = get_json(KEYS[3], number)
if not progress or progress.c ~= attempt or progress.s ~= 'dialing' then return 0 end
local field = number .. ':' .. attempt
local record = get_json(KEYS[4], field)
if record and record.st ~= 'creating' then return 0 end
if record then
  redis.call('HDEL', KEYS[4], field)
  if progress.ts and progress.ts[#progress.ts] == record.t0 then table.remove(progress.ts) end
end
local attempt_id = ARGV[1] .. ':' .. field
redis.call('ZREM', KEYS[10], attempt_id)
redis.call('ZREM', KEYS[6], attempt_id)
redis.call('ZREM', KEYS[7], attempt_id)
redis.call('ZREM', KEYS[8], attempt_id)
redis.call('ZREM', KEYS[9], ARGV[4])
progress.c = 0
if redis.call('HGET', KEYS[2], 'state') == 'cancelled' then
  -- the campaign was cancelled while this attempt was being prepared: close the contact
  progress.o = 'cancelled'
  set_status(KEYS[2], progress, 'done')
  redis.call('HINCRBY', KEYS[2], 'o:cancelled', 1)
  set_json(KEYS[3], number, progress)
  return 1
end
set_status(KEYS[2], progress, progress.w or 'pending')
set_json(KEYS[3], number, progress)
redis.call('ZADD', KEYS[5], math.max(now + tonumber(ARGV[6]), tonumber(ARGV[5])), number)
redis.call('HINCRBY', KEYS[2], 'handed_back', 1)
return 1
