-- Following an inbound call (a call-back) to its end, like an outbound attempt's call.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 inbound calls, 5 tracking, 6 due, 7 trunk campaigns,
--       8 contacts, 9.. the outbox tail (end only)
-- ARGV: 1 action: live | missing | end, 2 campaign name, 3 call-back id, 4 tracking member,
--   live:    5 call id, 6 new tracking member, 7 next poll delay ms
--   missing: (none) - Ultravox never created the call (refused it, or the caller hung up first)
--   end:     5 outcome, 6 fields JSON, 7 billing final ('1'/'0'), 8 close the contact when answered
--            ('1'/'0'), 9 next poll delay ms while billing is not final, 10.. the outbox tail
-- Returns 1 if this call recorded news, 0 otherwise; for end, +1 when the call's end is news and +2 when
-- its final billing was counted now. Idempotent: a poll and a webhook may both report the same.
local now = now_ms()
local record = get_json(KEYS[4], ARGV[3])
local action = ARGV[1]
if not record then
  redis.call('ZREM', KEYS[5], ARGV[4])
  return 0
end
if action == 'live' then
  redis.call('ZREM', KEYS[5], ARGV[4])
  if record.st ~= 'routed' then return 0 end
  record.st, record.call, record.cr = 'live', ARGV[5], now
  set_json(KEYS[4], ARGV[3], record)
  schedule_at(KEYS[5], now + tonumber(ARGV[7]), ARGV[6], now)
  return 1
end
if action == 'missing' then
  redis.call('ZREM', KEYS[5], ARGV[4])
  if record.st ~= 'routed' then return 0 end
  record.st, record.eo = 'not_created', now
  set_json(KEYS[4], ARGV[3], record)
  redis.call('HINCRBY', KEYS[2], 'ib:not_created', 1)
  return 1
end
-- end
local fields = cjson.decode(ARGV[6])
if fields.call and record.call and fields.call ~= record.call then return 0 end
local news = 0
if record.st ~= 'ended' then
  news = 1
  for key, value in pairs(fields) do record[key] = value end
  record.st, record.o, record.eo = 'ended', ARGV[5], now
  redis.call('HINCRBY', KEYS[2], 'ib:' .. ARGV[5], 1)
  local number = record.n
  local progress = get_json(KEYS[3], number)
  if progress then
    progress.ibo, progress.ibc = ARGV[5], record.call
    if ARGV[5] == 'answered' and ARGV[8] == '1' and not progress.cbk then
      -- an answered call-back closes the contact: no further outbound attempt. One waiting (pending,
      -- retry_wait) closes now; one in flight is stopped by send.lua, or ends with its own outcome.
      progress.cbk = now
      if progress.s == 'pending' or progress.s == 'retry_wait' then
        redis.call('ZREM', KEYS[6], number)
        progress.c = 0
        set_status(KEYS[2], progress, 'done')
        progress.o = 'called_back'
        redis.call('HINCRBY', KEYS[2], 'o:called_back', 1)
        -- the contact closes: its event in this same step, like finish.lua's
        if outbox_open(9, 10) then
          local contact = get_json(KEYS[8], number) or {}
          outbox_append('contact.completed', ARGV[2] .. ':' .. number, {campaign = ARGV[2], contact_id = contact.i,
                        phone = number, final_outcome = 'called_back', attempts = progress.a or 0,
                        call_id = record.call}, now)
        end
      end
    end
    set_json(KEYS[3], number, progress)
    maybe_complete(KEYS[2], KEYS[7], ARGV[2])
  end
elseif ARGV[7] == '1' and record.bf ~= 1 then
  -- billing only: an ended call's final figures arrived
  for _, key in ipairs({'sip', 'agent', 'bsrc'}) do record[key] = fields[key] end
end
if ARGV[7] == '1' then
  if record.bf ~= 1 then
    record.bf = 1
    news = news + 2
    redis.call('HINCRBYFLOAT', KEYS[2], 'ib_sip_seconds', record.sip or 0)
    redis.call('HINCRBYFLOAT', KEYS[2], 'ib_agent_seconds', record.agent or 0)
  end
  redis.call('ZREM', KEYS[5], ARGV[4])
else
  schedule_at(KEYS[5], now + tonumber(ARGV[9]), ARGV[4], now)
end
set_json(KEYS[4], ARGV[3], record)
return news
