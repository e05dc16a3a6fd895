-- Move members still in a schedule ZSET to now + ARGV[1] ms (see reschedule_member in the prelude).
-- KEYS: 1 clock, 2 schedule
local now = now_ms()
local later = now + tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do moved = moved + reschedule_member(KEYS[2], ARGV[i], later, now) end
return moved
