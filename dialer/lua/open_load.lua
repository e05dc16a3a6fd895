-- The first write of a contacts load, atomic: create the campaign if it is new (active, or paused
-- so that nothing is dialled before `dialer campaign resume`), or pause it when asked, and mark the
-- load as started. The caller checked the campaign's settings; if they changed since, nothing is
-- written.
-- KEYS: 1 clock, 2 campaign, 3 campaigns, 4 trunk campaigns, 5 loads
-- ARGV: 1 campaign name, 2 the stored config as the caller read it ('' = no campaign yet),
--       3 the config to create it with, 4 'active' | 'paused', 5 file digest, 6 load status JSON
-- Returns 'created', 'existing' or 'error:changed'.
local stored = redis.call('HGET', KEYS[2], 'config')
if (stored or '') ~= ARGV[2] then return 'error:changed' end
local result = 'existing'
if not stored then
  redis.call('HSET', KEYS[2], 'config', ARGV[3], 'state', ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[1])
  result = 'created'
elseif ARGV[4] == 'paused' then
  local state = redis.call('HGET', KEYS[2], 'state')
  if state == 'active' or state == 'completed' then redis.call('HSET', KEYS[2], 'state', 'paused') end
end
-- the trunk's rotation lists exactly the active campaigns
if redis.call('HGET', KEYS[2], 'state') == 'active' then
  join_rotation(KEYS[4], ARGV[1])
else
  redis.call('SREM', KEYS[4], ARGV[1])
end
redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
-- a campaign whose file is still loading is never completed (see maybe_complete)
redis.call('HSET', KEYS[2], 'loading', ARGV[5])
return result
