-- arq's poll and job pickup in one step. arq reads the due ids of its queue, then takes each one with
-- WATCH/EXISTS/ZSCORE/MULTI/PSETEX (four round trips per job; here a round trip is most of what a
-- dial job costs): a job whose in-progress key exists runs somewhere (this worker included) and is
-- left alone; any other due job is taken by writing that key, exactly as arq writes it.
-- Not a dialer script (no prelude): time is the caller's (ARGV[1]), because arq writes the queue's
-- scores with the enqueuing worker's clock and compares them with its own. The in-progress keys are
-- arq's (named from the job ids, so not declared in KEYS: arq runs on one Redis, never a cluster);
-- each carries arq's TTL.
-- KEYS: 1 queue
-- ARGV: 1 now ms (caller's clock), 2 in-progress timeout ms, 3 in-progress key prefix,
--       4 most due ids to read, 5 most jobs to take (free job slots)
-- Returns {job id, score, job id, score, ...} of the jobs taken.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local room = tonumber(ARGV[5])
local taken = {}
for i = 1, #due, 2 do
  if #taken >= 2 * room then break end
  local key = ARGV[3] .. due[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, '1', 'PX', tonumber(ARGV[2]))
    taken[#taken + 1] = due[i]
    taken[#taken + 1] = due[i + 1]
  end
end
return taken
