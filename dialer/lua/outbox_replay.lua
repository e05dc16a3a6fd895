-- Queue retained events appended at or after ARGV[1] for one destination again (dialer outbox
-- replay): a page of the log at a time, from offset ARGV[2]. Events still pending there are left
-- as they are; each keeps its id and sequence, so ordering per contact holds and receivers dedupe.
-- KEYS: 1 clock, 2 events, 3 log, 4 queue, 5 heads, 6 pending, 7 tries, 8 dead
-- ARGV: 1 since ms, 2 offset, 3 page size
-- Returns {events queued again, events read}.
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], tonumber(ARGV[1]), '+inf', 'LIMIT', tonumber(ARGV[2]), tonumber(ARGV[3]))
local queued = 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw and not redis.call('ZSCORE', KEYS[6], id) then
    local event = cjson.decode(raw)
    redis.call('ZADD', KEYS[4], 0, event.key .. '|' .. string.format('%012d', event.seq) .. '|' .. id)
    redis.call('ZADD', KEYS[6], event.at, id)
    redis.call('ZREM', KEYS[8], id)
    outbox_due({heads = KEYS[5]}, event.key, now, now, true)
    queued = queued + 1
  end
end
return {queued, #ids}
