-- Move a campaign between states; the trunk's rotation always lists exactly the active campaigns.
-- KEYS: 1 clock, 2 campaign, 3 trunk campaigns, then the outbox tail
-- ARGV: 1 campaign name, 2 action: pause | resume | cancel | load_start | load_end | noop, 3 load digest
--       then the outbox tail (dialer/lua/_outbox.lua): a campaign completed here (a load that left
--       nothing to dial, a resume of one with nothing open) announces campaign.completed like any other
-- Returns the state after the action, or an error string starting with 'error:'.
local state = redis.call('HGET', KEYS[2], 'state')
if not state then return 'error:unknown campaign' end
outbox_open(4, 4)
local action = ARGV[2]
if action == 'pause' then
  if state ~= 'active' then return 'error:campaign is ' .. state .. ', only an active campaign can be paused' end
  redis.call('HSET', KEYS[2], 'state', 'paused')
  redis.call('SREM', KEYS[3], ARGV[1])
elseif action == 'resume' then
  if state ~= 'paused' then return 'error:campaign is ' .. state .. ', only a paused campaign can be resumed' end
  redis.call('HSET', KEYS[2], 'state', 'active')
  join_rotation(KEYS[3], ARGV[1])
elseif action == 'cancel' then
  if state == 'completed' then return 'error:campaign is already completed' end
  if state ~= 'cancelled' then
    -- when it ended (callback_route.lua counts route_after_end from it); a repeated cancel keeps it
    redis.call('HSET', KEYS[2], 'state', 'cancelled', 'ended', now_ms())
  end
  redis.call('SREM', KEYS[3], ARGV[1])
elseif action == 'load_start' then
  redis.call('HSET', KEYS[2], 'loading', ARGV[3])
elseif action == 'load_end' then
  if redis.call('HGET', KEYS[2], 'loading') == ARGV[3] then redis.call('HDEL', KEYS[2], 'loading') end
  local open = 0
  for _, status in ipairs({'pending', 'dialing', 'in_call', 'retry_wait'}) do
    open = open + tonumber(redis.call('HGET', KEYS[2], 'n:' .. status) or '0')
  end
  if state == 'completed' and open > 0 then
    redis.call('HSET', KEYS[2], 'state', 'active')
    redis.call('HDEL', KEYS[2], 'ended')
  end
end
state = redis.call('HGET', KEYS[2], 'state')
if state == 'active' then
  join_rotation(KEYS[3], ARGV[1])
  maybe_complete(KEYS[2], KEYS[3], ARGV[1])
end
return redis.call('HGET', KEYS[2], 'state')
