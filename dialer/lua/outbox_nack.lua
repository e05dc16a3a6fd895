-- A delivery failed: try the same event again after ARGV[5] ms (later events of the contact wait
-- behind it), or, once it has been failing for the retry window, give it up (dead-letter ZSET,
-- replayable) and move on to the contact's next event.
-- KEYS: 1 clock, 2 queue, 3 heads, 4 pending, 5 tries, 6 dead
-- ARGV: 1 ordering key, 2 queue member, 3 event id, 4 retry window ms, 5 delay ms
-- Returns 'retry', 'dead', or 'gone' (it had already left the queue).
local now = now_ms()
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 'gone' end
redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
local appended = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[3]) or now)
if now - appended >= tonumber(ARGV[4]) then
  local dest = {queue = KEYS[2], heads = KEYS[3], pending = KEYS[4], tries = KEYS[5]}
  outbox_advance(dest, ARGV[1], ARGV[2], ARGV[3], now)
  redis.call('ZADD', KEYS[6], now, ARGV[3])
  return 'dead'
end
outbox_due({heads = KEYS[3]}, ARGV[1], now + tonumber(ARGV[5]), now, false)
return 'retry'
