-- A signed Ultravox webhook (call.ended / call.billed) asks for a look at its call: one step for the
-- whole delivery (the receiver's cost is its round trips). In order: a delivery seen before is a replay;
-- the campaign and the attempt must exist; the attempt's create must be recorded; the event must name
-- the attempt's own call. Only then is the call's tracking entry (live, or waiting for billing) made due
-- now (XX: nothing is created), and webhooks are marked as arriving (trackers poll live calls only as a
-- safety net while this key lives). The payload itself is never recorded.
-- KEYS: 1 clock, 2 seen-delivery key, 3 campaign, 4 attempts, 5 tracking, 6 webhooks-live key
-- ARGV: 1 replay window ms, 2 attempt field (number:attempt), 3 call id, 4 tracking member,
--       5 webhooks-live window ms
-- Returns {verdict, recorded call id or ''}: replayed, unknown_campaign, unknown_attempt,
-- not_yet_recorded, foreign_call, polled_now (an entry was made due) or duplicate (nothing to move).
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[1])) then return {'replayed', ''} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {'unknown_campaign', ''} end
local record = get_json(KEYS[4], ARGV[2])
if not record then return {'unknown_attempt', ''} end
local recorded = record.call
if recorded == nil or recorded == cjson.null then
  -- the call ended before its create was recorded: Ultravox is asked to deliver it again shortly
  if record.st == 'creating' then return {'not_yet_recorded', ''} end
  return {'foreign_call', ''}
end
if recorded ~= ARGV[3] then return {'foreign_call', tostring(recorded)} end
local now = now_ms()
local moved = redis.call('ZADD', KEYS[5], 'XX', 'CH', now, ARGV[4])
moved = moved + redis.call('ZADD', KEYS[5], 'XX', 'CH', now, ARGV[4] .. '|b')
redis.call('SET', KEYS[6], now, 'PX', tonumber(ARGV[5]))
if moved > 0 then
  announce_due(KEYS[5], {ARGV[4], ARGV[4] .. '|b'}, now, now)
  return {'polled_now', ''}
end
return {'duplicate', ''}
