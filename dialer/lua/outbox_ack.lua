-- An event reached a destination (2xx): remove it there, and make the contact's next event due now.
-- KEYS: 1 clock, 2 queue, 3 heads, 4 pending, 5 tries
-- ARGV: 1 ordering key, 2 queue member, 3 event id
-- Returns 1, or 0 if it had already left (delivered by a worker whose lease had run out).
local now = now_ms()
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
local dest = {queue = KEYS[2], heads = KEYS[3], pending = KEYS[4], tries = KEYS[5]}
return outbox_advance(dest, ARGV[1], ARGV[2], ARGV[3], now)
