-- A probe succeeded: lift the account's fault hold, but only if the hold is still a fault (a 429
-- hold set since then is left to run out on its own).
-- KEYS: 1 clock, 2 account hold
-- Returns 1 if a fault hold was lifted.
local hold = redis.call('GET', KEYS[2])
if hold and string.sub(hold, 1, 6) == 'fault:' then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
