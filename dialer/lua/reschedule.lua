-- Move members still in a schedule ZSET to now + ARGV[1] ms (members already removed stay removed).
-- KEYS: 1 clock, 2 schedule
local later = now_ms() + tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do
  moved = moved + redis.call('ZADD', KEYS[2], 'XX', 'CH', later, ARGV[i])
end
return moved
