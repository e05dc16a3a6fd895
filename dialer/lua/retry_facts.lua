-- What a retry decision needs, read in one step: the clock, the contact's progress and its record.
-- KEYS: 1 clock, 2 progress, 3 contacts
-- ARGV: 1 number
-- Returns {now ms, progress JSON or false, contact JSON or false}.
return {now_ms(), redis.call('HGET', KEYS[2], ARGV[1]), redis.call('HGET', KEYS[3], ARGV[1])}
