-- Claim due contacts for one trunk, holding a trunk slot (and an account slot) for each.
-- KEYS: 1 clock offset, 2 trunk slots, 3 trunk unsent, 4 trunk hold, 5 account slots,
--       6 account hold, 7 trunk cursor, 8 claimed, 9 the trunk's campaigns (set), then per
--       campaign: hash, due, progress.
-- ARGV: 1 trunk limit, 2 account limit (0 = none), 3 unsent cap, 4 batch, 5 claim lease ms,
--       6.. campaign names (same order as their keys): what the caller believes KEYS[9] holds.
-- Returns {wait_ms, job_ref...}: the job refs claimed (wait_ms then 1 if the batch ran out with room
-- left, so claiming again at once may find more; 0 if not), or how long nothing can be claimed; or
-- {-3, campaign...} when KEYS[9] differs from the names given: nothing claimed, the set returned; or
-- {-4, ms} when the trunk's unsent set is being refilled (below): nothing claimed, claim again in ms
-- (0: on the next tick).
-- The pacer keeps each trunk's set between ticks and this check keeps it honest, so a tick is one
-- round trip instead of a set read plus a claim.
local now = now_ms()
for _, hold in ipairs({KEYS[4], KEYS[6]}) do
  local ttl = redis.call('PTTL', hold)
  if ttl > 0 then return {ttl} end
end

local count = #ARGV - 5
local listed = redis.call('SCARD', KEYS[9]) == count
for i = 6, #ARGV do
  if not listed then break end
  listed = redis.call('SISMEMBER', KEYS[9], ARGV[i]) == 1
end
if not listed then
  local members = redis.call('SMEMBERS', KEYS[9])
  table.insert(members, 1, -3)
  return members
end

local lease = now + tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local room = math.min(free_slots(KEYS[2], tonumber(ARGV[1]), now), free_slots(KEYS[5], tonumber(ARGV[2]), now))
if room <= 0 then return {-1} end
-- A trunk sending at its rate keeps its unsent set full of reservations. Topped up one contact per
-- tick, every call cost a claim, an enqueue and a pickup; refilled once half of the set is free, each
-- of those serves several calls, while the half still reserved keeps the trunk sending meanwhile.
local cap = tonumber(ARGV[3])
local refill = math.ceil(cap / 2)
local unsent_room = cap - redis.call('ZCARD', KEYS[3])
if unsent_room < refill then
  -- a reservation says when it leaves the set; a claim not yet reserved does not (0: the next tick)
  local index = refill - unsent_room - 1
  local next_free = redis.call('ZRANGE', KEYS[3], index, index, 'WITHSCORES')
  if next_free[1] and string.sub(next_free[1], -5) == '@rate' then return {-4, tonumber(next_free[2]) - now} end
  return {-4, 0}
end
room = math.min(room, unsent_room, tonumber(ARGV[4]))

if count == 0 then return {-2} end
-- Serve campaigns in turn, one contact each per round, starting where the last claim stopped,
-- so that no campaign on a shared trunk starves another.
local start = redis.call('INCR', KEYS[7]) % count
redis.call('PEXPIRE', KEYS[7], 86400000)
local exhausted, open, claimed = {}, count, {0}
local soonest = nil
while room > 0 and open > 0 do
  for step = 0, count - 1 do
    if room == 0 then break end
    local i = (start + step) % count
    if not exhausted[i] then
      local campaign, due, progress_key = KEYS[10 + 3 * i], KEYS[11 + 3 * i], KEYS[12 + 3 * i]
      local first = nil
      -- a campaign with a fault (its agent is gone, its trunk is missing) waits for the fault to clear
      if redis.call('HGET', campaign, 'state') == 'active' and redis.call('HEXISTS', campaign, 'fault') == 0 then
        first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
      end
      if first and first[1] and tonumber(first[2]) <= now then
        local number = first[1]
        redis.call('ZREM', due, number)
        local progress = get_json(progress_key, number) or {s = 'pending', a = 0}
        progress.c = progress.a + 1
        progress.k = (progress.k or 0) + 1
        progress.w = progress.s  -- where the contact goes back to if the attempt is handed back
        set_status(campaign, progress, 'dialing')
        set_json(progress_key, number, progress)
        local attempt_id = ARGV[6 + i] .. ':' .. number .. ':' .. progress.c
        local job_ref = attempt_id .. '#' .. progress.k
        hold_slot(KEYS[2], tonumber(ARGV[1]), attempt_id, lease)
        hold_slot(KEYS[5], tonumber(ARGV[2]), attempt_id, lease)
        redis.call('ZADD', KEYS[3], lease, attempt_id)
        redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]) + 1000)
        redis.call('ZADD', KEYS[8], lease, job_ref)
        claimed[#claimed + 1] = job_ref
        room = room - 1
      else
        exhausted[i] = true
        open = open - 1
        if first and first[2] then
          local wait = tonumber(first[2]) - now
          if soonest == nil or wait < soonest then soonest = wait end
        end
      end
    end
  end
end
if #claimed == 1 then claimed[1] = soonest or -2
elseif room == 0 and #claimed - 1 == tonumber(ARGV[4]) then claimed[1] = 1 end
return claimed
