-- The create succeeded: the attempt is live, its slots now last as long as the longest possible
-- call, and the call is followed by the fleet's trackers.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 trunk slots, 6 account slots,
--       7 trunk unsent, 8 tracking, 9 account failures (the breaker counts consecutive failures),
--       10 ambiguous attempts, then optionally: 11 the job queue (ZSET), 12.. the job's own keys
-- ARGV: 1 number, 2 attempt, 3 attempt id, 4 call id, 5 lease ms, 6 first poll ms,
--       7 trunk limit, 8 account limit, 9 the job's queue member (with KEYS[11])
-- Returns 1 if this call recorded the creation, 0 if it was already recorded.
-- With a job given, the job that made the create is finished here too: once the call is recorded
-- there is nothing left for it to do or to run again, so its keys go with the record.
local now = now_ms()
local number, attempt = ARGV[1], tonumber(ARGV[2])
local field = number .. ':' .. attempt
local record = get_json(KEYS[4], field)
if not record or record.st ~= 'creating' then return 0 end
record.st, record.call, record.cr = 'live', ARGV[4], now
set_json(KEYS[4], field, record)
redis.call('ZREM', KEYS[10], ARGV[3])

local progress = get_json(KEYS[3], number)
progress.a = attempt
set_status(KEYS[2], progress, 'in_call')
set_json(KEYS[3], number, progress)
redis.call('HINCRBY', KEYS[2], 'calls', 1)

local deadline = now + tonumber(ARGV[5])
hold_slot(KEYS[5], tonumber(ARGV[7]), ARGV[3], deadline)
hold_slot(KEYS[6], tonumber(ARGV[8]), ARGV[3], deadline)
redis.call('ZREM', KEYS[7], ARGV[3])
redis.call('DEL', KEYS[9])
schedule_at(KEYS[8], now + tonumber(ARGV[6]), ARGV[3] .. '|' .. ARGV[4], now)
if KEYS[11] then
  redis.call('ZREM', KEYS[11], ARGV[9])
  for i = 12, #KEYS do redis.call('DEL', KEYS[i]) end
end
return 1
