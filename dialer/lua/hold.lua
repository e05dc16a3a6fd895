-- Stop creations on a trunk or the account for ARGV[1] ms (Retry-After); never shortens a hold.
-- KEYS: 1 clock, 2 hold
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', tonumber(ARGV[1]))
  return 1
end
return 0
