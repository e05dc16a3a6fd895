-- Circuit breaker: count a failure; after ARGV[1] failures in a row (a successful create resets the
-- count) within ARGV[2] ms, open the breaker
-- (the hold key) for ARGV[3] ms. Returns 1 when this failure opened it.
-- KEYS: 1 clock, 2 failures counter, 3 hold
local failures = redis.call('INCR', KEYS[2])
if failures == 1 then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2])) end
if failures >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], 'breaker', 'PX', tonumber(ARGV[3]))
  return 1
end
return 0
