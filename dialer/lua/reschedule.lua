-- Move members still in a schedule ZSET to now + ARGV[1] ms (members already removed stay removed).
-- A member is leased by pushing it ahead (lease_due), so one that is due by now was nudged while its
-- holder worked on it (a webhook asked for a look at once): it stays due now instead of being
-- pushed back a whole interval.
-- KEYS: 1 clock, 2 schedule
local now = now_ms()
local later = now + tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do
  local score = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[i]))
  if score and score > now then
    moved = moved + redis.call('ZADD', KEYS[2], 'XX', 'CH', later, ARGV[i])
  end
end
return moved
