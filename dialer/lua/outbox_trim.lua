-- Retention: forget up to ARGV[2] events appended before now - ARGV[1] ms that no configured
-- destination still has pending (delivered or given up everywhere), with their dead letters.
-- KEYS: 1 clock, 2 events, 3 log, then per destination: pending, dead
-- Returns the number of events forgotten.
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
local forgotten = 0
for _, id in ipairs(ids) do
  local pending = false
  for i = 4, #KEYS, 2 do
    if redis.call('ZSCORE', KEYS[i], id) then pending = true end
  end
  if not pending then
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[2], id)
    for i = 5, #KEYS, 2 do redis.call('ZREM', KEYS[i], id) end
    forgotten = forgotten + 1
  end
end
return forgotten
