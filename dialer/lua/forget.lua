-- An ambiguous create was looked up at Ultravox and does not exist: forget the 'creating' record
-- so the job can start the attempt afresh (its slots stay held).
-- KEYS: 1 clock, 2 progress, 3 attempts
-- ARGV: 1 number, 2 attempt
local field = ARGV[1] .. ':' .. ARGV[2]
local record = get_json(KEYS[3], field)
if not record or record.st ~= 'creating' then return 0 end
redis.call('HDEL', KEYS[3], field)
local progress = get_json(KEYS[2], ARGV[1])
if progress and progress.ts and progress.ts[#progress.ts] == record.t0 then
  table.remove(progress.ts)
  set_json(KEYS[2], ARGV[1], progress)
end
return 1
