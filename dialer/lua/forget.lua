-- An ambiguous create was looked up at Ultravox and not found. Within its quarantine (the call may
-- still appear: Ultravox can finish a create long after our request timed out) nothing changes but
-- the lookup count; once the quarantine has passed, the 'creating' record is forgotten so the job can
-- start the attempt afresh (its slots stay held).
-- KEYS: 1 clock, 2 progress, 3 attempts, 4 ambiguous attempts
-- ARGV: 1 number, 2 attempt, 3 attempt id, 4 quarantine ms
-- Returns {forgotten (1/0), ms left in quarantine, lookups so far}.
local now = now_ms()
local field = ARGV[1] .. ':' .. ARGV[2]
local record = get_json(KEYS[3], field)
if not record or record.st ~= 'creating' then return {0, 0, 0} end
local since = record.amb or now
record.lk = (record.lk or 0) + 1
local left = since + tonumber(ARGV[4]) - now
if left > 0 then
  set_json(KEYS[3], field, record)
  return {0, left, record.lk}
end
redis.call('HDEL', KEYS[3], field)
redis.call('ZREM', KEYS[4], ARGV[3])
local progress = get_json(KEYS[2], ARGV[1])
if progress and progress.ts and progress.ts[#progress.ts] == record.t0 then
  table.remove(progress.ts)
  set_json(KEYS[2], ARGV[1], progress)
end
return {1, 0, record.lk}
