-- The agent reported what a conversation achieved (the dialer's outcome tool): record it on the
-- attempt and the contact, and for an opt-out put the number on the global DNC list at once, with
-- the consent evidence, in the same step: from this moment begin.lua refuses the number everywhere.
-- Idempotent: the same report (same digest of its arguments) is recorded once and answered alike; a
-- different report for the same call replaces the disposition (an opt-out is never taken back here).
-- KEYS: 1 clock, 2 campaign, 3 progress, 4 attempts, 5 dnc, 6 dnc evidence, 7.. the outbox tail
-- ARGV: 1 campaign name, 2 number, 3 attempt, 4 call id, 5 disposition, 6 notes, 7 call-back ms
--       ('' = none), 8 digest of the arguments, 9 opt-out ('1' / '0')
-- Returns {verdict, now}: recorded | updated | duplicate | unknown_attempt | foreign_call
local now = now_ms()
local number, attempt = ARGV[2], tonumber(ARGV[3])
local field = number .. ':' .. attempt
local record = get_json(KEYS[4], field)
if not record then return {'unknown_attempt', now} end
-- the token names the attempt; the call id must be its call (or the create's answer is not in yet)
if record.call and record.call ~= ARGV[4] then return {'foreign_call', now} end
if record.dh == ARGV[8] then return {'duplicate', now} end

local verdict = 'recorded'
if record.dsp then
  verdict = 'updated'
  redis.call('HINCRBY', KEYS[2], 'd:' .. record.dsp, -1)
end
record.dsp, record.dh, record.dat = ARGV[5], ARGV[8], now
record.nt = ARGV[6] ~= '' and ARGV[6] or nil
record.cb = ARGV[7] ~= '' and tonumber(ARGV[7]) or nil
record.tcall = ARGV[4]
set_json(KEYS[4], field, record)
redis.call('HINCRBY', KEYS[2], 'd:' .. ARGV[5], 1)

local progress = get_json(KEYS[3], number)
if progress then
  progress.dsp, progress.nt = record.dsp, record.nt
  set_json(KEYS[3], number, progress)
end

if ARGV[9] == '1' and redis.call('SADD', KEYS[5], number) == 1 then
  redis.call('HINCRBY', KEYS[2], 'optouts', 1)
  -- the first evidence stands: it is the moment the person asked
  redis.call('HSETNX', KEYS[6], number, cjson.encode({
    campaign = ARGV[1], call_id = ARGV[4], attempt = attempt, at_ms = now, source = 'agent_tool'}))
  -- the opt-out's event, in the same step that records it (ARGV 10..: the outbox tail)
  if outbox_open(7, 10) then
    outbox_append('contact.opted_out', ARGV[1] .. ':' .. number,
                  {campaign = ARGV[1], phone = number, call_id = ARGV[4], attempt = attempt, at_ms = now}, now)
  end
end
return {verdict, now}
