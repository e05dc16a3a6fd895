-- Append one event for a producer outside a script (dialer/outbox.py append_event).
-- KEYS: 1 clock, 2.. the outbox tail
-- ARGV: 1 type, 2 ordering key, 3 data (JSON), 4.. the outbox tail
-- Returns the event id, or '' when no destination is configured.
local now = now_ms()
if not outbox_open(2, 4) then return '' end
return outbox_append(ARGV[1], ARGV[2], cjson.decode(ARGV[3]), now)
