-- Shared by every dialer script (prepended when the script is loaded).
-- Time always comes from Redis TIME, shifted by the optional test-only offset in KEYS[1], so that no
-- decision ever depends on a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local offset = redis.call('GET', KEYS[1])
  if offset then ms = ms + tonumber(offset) end
  return ms
end

local function get_json(hash, field)
  local raw = redis.call('HGET', hash, field)
  if raw then return cjson.decode(raw) end
  return nil
end

local function set_json(hash, field, value)
  redis.call('HSET', hash, field, cjson.encode(value))
end

-- A contact's status and the campaign's counters always move together.
local function set_status(campaign, progress, status)
  if progress.s ~= status then
    if progress.s then redis.call('HINCRBY', campaign, 'n:' .. progress.s, -1) end
    redis.call('HINCRBY', campaign, 'n:' .. status, 1)
    progress.s = status
  end
end

-- Lease semaphore: drop holders whose lease ran out, then report free capacity.
local function free_slots(key, limit, now)
  if limit <= 0 then return 1e9 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return limit - redis.call('ZCARD', key)
end

local function hold_slot(key, limit, holder, deadline)
  if limit <= 0 then return end
  redis.call('ZADD', key, deadline, holder)
  -- the key lives exactly as long as its longest lease
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, math.floor(tonumber(last[2])) + 1000)
end

-- Extend a key's TTL to at least ms (never shortens it).
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, math.ceil(ms)) end
end

-- How long after its time a held phone leg (constants.trunk_held_legs) still keeps new dials back:
-- past it, its worker is presumed lost (the tracker gives the leg to another after poll_visibility).
local LEG_GRACE_MS = 5000

-- A campaign joins its trunk's rotation (the set the pacers claim from); pacers with nothing to
-- claim sleep until one does.
local function join_rotation(trunk_campaigns, name)
  if redis.call('SADD', trunk_campaigns, name) == 1 then announce(trunk_campaigns) end
end

-- Set a member's next poll time in a schedule ZSET, announcing it when it is soon (see announce_due).
local function schedule_at(schedule, due, member, now)
  redis.call('ZADD', schedule, due, member)
  announce_due(schedule, {member}, due, now)
end

-- Move a member still in a schedule ZSET to ``later`` (one already removed stays removed). A member
-- is leased by pushing it ahead (lease_due), so one that is due by now was nudged while its holder
-- worked on it (a webhook asked for a look at once): it stays due now instead of being pushed back.
-- ``quiet``: the caller is the tracker handing back its own polls; the look it makes in the same
-- script tells it when they fall due, so no announcement is needed.
local function reschedule_member(schedule, member, later, now, quiet)
  local score = tonumber(redis.call('ZSCORE', schedule, member))
  if score and score > now then
    local moved = redis.call('ZADD', schedule, 'XX', 'CH', later, member)
    if moved > 0 and not quiet then announce_due(schedule, {member}, later, now) end
    return moved
  end
  return 0
end

-- A campaign with nothing left to dial or follow is completed and leaves its trunk's rotation.
local function maybe_complete(campaign, trunk_campaigns, name)
  local open = 0
  for _, status in ipairs({'pending', 'dialing', 'in_call', 'retry_wait'}) do
    open = open + tonumber(redis.call('HGET', campaign, 'n:' .. status) or '0')
  end
  -- a campaign whose CSV is still being loaded is not finished, whatever its counters say
  if open == 0 and redis.call('HEXISTS', campaign, 'loading') == 0 and redis.call('HGET', campaign, 'state') == 'active' then
    -- when it ended: call-backs are routed to an ended campaign for its route_after_end from here
    redis.call('HSET', campaign, 'state', 'completed', 'ended', now_ms())
    redis.call('SREM', trunk_campaigns, name)
    -- a no-op unless the calling script opened the outbox (dialer/lua/_outbox.lua)
    outbox_append('campaign.completed', name, {campaign = name}, now_ms())
  end
end
