-- Billing for an ended call becomes final: from Ultravox's figures, or computed once we have
-- waited long enough for them. Counted into the campaign's totals exactly once.
-- KEYS: 1 clock, 2 campaign, 3 attempts, 4 tracking
-- ARGV: 1 number, 2 attempt, 3 billing fields (JSON), 4 tracking member, 5 final from Ultravox ('1'/'0'),
--       6 billing wait ms, 7 billing poll ms
-- Returns 1 if this call settled the billing, 0 otherwise.
local now = now_ms()
local field = ARGV[1] .. ':' .. ARGV[2]
local record = get_json(KEYS[3], field)
if not record or record.bf == 1 then
  redis.call('ZREM', KEYS[4], ARGV[4])
  return 0
end
if record.st ~= 'ended' then return 0 end
if ARGV[5] ~= '1' and now - record.eo < tonumber(ARGV[6]) then
  -- not final yet: look again a poll interval on, unless a call.billed nudged it meanwhile (due by
  -- now although this poll leased it ahead): then it is looked at again at once
  local score = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[4]) or '-1')
  if score < 0 or score > now then schedule_at(KEYS[4], now + tonumber(ARGV[7]), ARGV[4], now) end
  return 0
end
for key, value in pairs(cjson.decode(ARGV[3])) do record[key] = value end
record.bf = 1
set_json(KEYS[3], field, record)
redis.call('HINCRBYFLOAT', KEYS[2], 'sip_seconds', record.sip or 0)
redis.call('HINCRBYFLOAT', KEYS[2], 'agent_seconds', record.agent or 0)
redis.call('ZREM', KEYS[4], ARGV[4])
return 1
