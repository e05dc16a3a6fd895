-- Lease the due head events of one destination: each contact's oldest undelivered event whose next
-- try is due, pushed ARGV[2] ms ahead so that a worker that vanishes mid-delivery gives it back.
-- KEYS: 1 clock, 2 events, 3 queue, 4 heads, 5 pending, 6 tries
-- ARGV: 1 limit, 2 lease ms
-- Returns the ms until the destination's next head falls due after this look (-1: none; a leased
-- one when its lease runs out), then a flat list: ordering key, queue member, event JSON, failures so
-- far; ... for each lease. The delivery loop sleeps until then (workers/wakeups.py).
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local dest = {queue = KEYS[3], heads = KEYS[4], pending = KEYS[5], tries = KEYS[6]}
local out = {}
for _, okey in ipairs(due) do
  local member = outbox_first(KEYS[3], okey)
  -- skip members whose event is gone (trimmed, or the queue of a destination that was replaced)
  while member do
    local id = string.match(member, '|([^|]+)$')
    local raw = redis.call('HGET', KEYS[2], id)
    if raw then
      redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), okey)
      table.insert(out, okey)
      table.insert(out, member)
      table.insert(out, raw)
      table.insert(out, tonumber(redis.call('HGET', KEYS[6], id) or '0'))
      break
    end
    outbox_advance(dest, okey, member, id, now)
    member = outbox_first(KEYS[3], okey)
  end
  if not member then redis.call('ZREM', KEYS[4], okey) end
end
local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
table.insert(out, 1, first[2] and math.max(tonumber(first[2]) - now, 0) or -1)
return out
