-- An attempt ended (the call was seen to end, or the create was refused for good): record the
-- outcome, free its slots at once, and either schedule the next attempt or close the contact.
-- Idempotent: the poller and a webhook may both report the same end.
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 due, 6 trunk slots, 7 account slots,
--       8 trunk unsent, 9 tracking, 10 claimed, 11 trunk campaigns, 12 trunk failures, 13 trunk hold,
--       14 ambiguous attempts, 15 contacts, 16.. the outbox tail (dialer/outbox.py)
-- ARGV: 1 campaign name, 2 number, 3 attempt, 4 outcome, 5 record fields (JSON),
--       6 retry at ms ('' = final), 7 tracking member ('' = none), 8 billing final ('1'/'0'),
--       9 billing poll ms, 10 job ref ('' = none), 11 breaker threshold, 12 breaker cooldown ms,
--       13 dispositions that ask for a call back (comma-separated, '' = none), 14.. the outbox tail
-- Returns 1 if this call recorded the end, 0 if it was already recorded (or names another call), or
-- {2, disposition, requested ms or ''} when the agent recorded one of ARGV[13] on the attempt and no
-- retry time was given: nothing written; the caller decides the call back and finishes again with it.
local now = now_ms()
local number, attempt = ARGV[2], tonumber(ARGV[3])
local field = number .. ':' .. attempt
local record = get_json(KEYS[4], field)
if not record or record.st == 'ended' then
  -- already recorded (by a webhook, another poller, or an earlier run): stop following this member
  if ARGV[7] ~= '' then redis.call('ZREM', KEYS[9], ARGV[7]) end
  return 0
end
local fields = cjson.decode(ARGV[5])
-- only the attempt's own call can end it: a report about any other call changes nothing
if fields.call and fields.call ~= record.call then return 0 end
-- Reading the disposition here spares every answered call a round trip of its own; the time of the
-- call back is the caller's to decide (the contact's zones, hours and budget).
if ARGV[6] == '' and ARGV[13] ~= '' and record.dsp then
  for asked in string.gmatch(ARGV[13], '[^,]+') do
    if asked == record.dsp then return {2, record.dsp, record.cb or ''} end
  end
end
for key, value in pairs(fields) do record[key] = value end
record.st, record.o, record.eo = 'ended', ARGV[4], now
local attempt_id = ARGV[1] .. ':' .. field
redis.call('ZREM', KEYS[14], attempt_id)
redis.call('ZREM', KEYS[6], attempt_id)
redis.call('ZREM', KEYS[7], attempt_id)
redis.call('ZREM', KEYS[8], attempt_id)
if ARGV[10] ~= '' then redis.call('ZREM', KEYS[10], ARGV[10]) end

local progress = get_json(KEYS[3], number)
progress.a, progress.c, progress.lo = attempt, 0, ARGV[4]
redis.call('HINCRBY', KEYS[2], 'e:' .. ARGV[4], 1)
local final_outcome = ARGV[4]
-- a cancelled campaign makes no further attempts: the contact closes as cancelled
if ARGV[6] ~= '' and redis.call('HGET', KEYS[2], 'state') == 'cancelled' then final_outcome = 'cancelled' end
if ARGV[6] ~= '' and final_outcome == ARGV[4] then
  set_status(KEYS[2], progress, 'retry_wait')
  redis.call('ZADD', KEYS[5], tonumber(ARGV[6]), number)
  redis.call('HINCRBY', KEYS[2], 'retries', 1)
else
  set_status(KEYS[2], progress, 'done')
  progress.o = final_outcome
  redis.call('HINCRBY', KEYS[2], 'o:' .. final_outcome, 1)
end
set_json(KEYS[3], number, progress)

if ARGV[8] == '1' then
  record.bf = 1
  redis.call('HINCRBYFLOAT', KEYS[2], 'sip_seconds', record.sip or 0)
  redis.call('HINCRBYFLOAT', KEYS[2], 'agent_seconds', record.agent or 0)
  if ARGV[7] ~= '' then redis.call('ZREM', KEYS[9], ARGV[7]) end
elseif ARGV[7] ~= '' then
  -- the call is over but its billing is not final yet: follow it for billing only. A poll leases its
  -- entry by pushing it ahead, so an entry due by now was nudged meanwhile (a call.billed webhook
  -- arrived while this end was being recorded): then billing is looked at now, not a poll interval on.
  local nudged = tonumber(redis.call('ZSCORE', KEYS[9], ARGV[7]) or '-1')
  local billing_at = now + tonumber(ARGV[9])
  if nudged >= 0 and nudged <= now then billing_at = now end
  redis.call('ZREM', KEYS[9], ARGV[7])
  schedule_at(KEYS[9], billing_at, ARGV[7] .. '|b', now)
end
set_json(KEYS[4], field, record)
-- Trunk circuit breaker: calls that keep failing in a row (SIP/system errors, not a busy or an
-- unanswered line) mean the trunk is down; stop dialling on it for a while instead of hammering it.
if ARGV[4] == 'failed' and record.call then
  local failures = redis.call('INCR', KEYS[12])
  redis.call('PEXPIRE', KEYS[12], tonumber(ARGV[12]) * 4)
  if failures >= tonumber(ARGV[11]) then
    redis.call('DEL', KEYS[12])
    redis.call('SET', KEYS[13], 'breaker: ' .. failures .. ' failed calls in a row', 'PX', tonumber(ARGV[12]))
  end
elseif record.call then
  redis.call('DEL', KEYS[12])
end
-- Result webhooks: the events of this end are appended in this same step (an outcome never exists
-- without its event); maybe_complete below adds campaign.completed.
if outbox_open(16, 14) then
  local contact = get_json(KEYS[15], number) or {}
  local okey = ARGV[1] .. ':' .. number
  local about = {campaign = ARGV[1], contact_id = contact.i, phone = number}
  local ended = {campaign = ARGV[1], contact_id = contact.i, phone = number, attempt = attempt,
                 attempt_id = attempt_id, call_id = record.call, outcome = ARGV[4], end_reason = record.er,
                 failure_reason = record.r, joined = record.jn, ended = record.en, ended_ms = now,
                 answered_seconds = record.dur, sip_billed_seconds = record.sip,
                 agent_billed_seconds = record.agent, billing_source = record.bsrc, billing_final = record.bf == 1,
                 summary = record.sum, disposition = record.dsp, notes = record.nt,
                 voicemail = record.vm == 1, voicemail_left = record.vml == 1,
                 retry_at_ms = (ARGV[6] ~= '' and final_outcome == ARGV[4]) and tonumber(ARGV[6]) or nil}
  outbox_append('attempt.ended', okey, ended, now)
  if progress.s == 'done' then
    about.final_outcome, about.attempts, about.disposition = final_outcome, attempt, record.dsp
    outbox_append('contact.completed', okey, about, now)
  end
end
maybe_complete(KEYS[2], KEYS[11], ARGV[1])
return 1
