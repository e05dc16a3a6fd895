-- Take up to ARGV[1] members of a schedule ZSET that are due, pushing each ARGV[2] ms ahead so
-- that a worker that vanishes gives them back to the fleet. Used for call polls and stale claims.
-- KEYS: 1 clock, 2 schedule
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local later = now + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[2], later, member) end
return due
