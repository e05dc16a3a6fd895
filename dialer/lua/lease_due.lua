-- Take up to ARGV[1] members of a schedule ZSET that are due, pushing each ARGV[2] ms ahead so
-- that a worker that vanishes gives them back to the fleet. Used for call polls and stale claims.
-- ARGV[3..]: pairs (member, delay ms) to reschedule first, as reschedule.lua does: the tracker's
-- polls hand back their calls' next poll times on its next look instead of a round trip each.
-- KEYS: 1 clock, 2 schedule, 3 (optional) a flag key whose existence is returned first: the
-- tracker learns whether webhooks arrive on the look it makes anyway, with no round trip of its own;
-- with it, the second element is the ms until the schedule's next member falls due.
local now = now_ms()
for i = 3, #ARGV, 2 do
  reschedule_member(KEYS[2], ARGV[i], now + tonumber(ARGV[i + 1]), now, true)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local later = now + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[2], later, member) end
if KEYS[3] then
  -- the tracker's look: also when the next member falls due (ms from now, -1: none), so that it
  -- sleeps until then (woken sooner by an announced entry, see schedule_at in the prelude)
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  local next_ms = -1
  if first[2] then next_ms = math.max(tonumber(first[2]) - now, 0) end
  table.insert(due, 1, next_ms)
  table.insert(due, 1, redis.call('EXISTS', KEYS[3]))
end
return due
