-- Wake-ups (workers/wakeups.py), shared by every dialer script (prepended first, before the outbox
-- and the prelude, which both announce). The tracker, the pacer and the result-webhook loop sleep
-- until they have work. A schedule entry made due sooner than their longest sleep is announced on a
-- channel named as the schedule (the tracking ZSET, a destination's outbox heads), and a campaign
-- joining a trunk's rotation on the channel named as the trunk's campaign set; a missed announcement
-- costs at most that longest sleep. The horizon is the workers' longest sleep, set when the script is
-- loaded (dialer/scripts.py); an entry due later is seen by a look before then.
local WAKE_HORIZON_MS = 1000

-- pcall: a Redis user without channel permissions (ACL `&...`) loses only the wake-up, never the
-- script's writes (the loops then look at their longest sleep).
local function announce(channel)
  redis.pcall('PUBLISH', channel, '')
end

-- Announce members of a schedule ZSET just made due at ``due`` when no sleeper would look by then:
-- they fall due within the horizon and are the schedule's next. An entry already due by then (``own``
-- members aside) means a look comes by ``due`` anyway: every sleeper saw that entry on its last look
-- and sleeps until it at most, or it was announced, or it was due beyond the horizon when made (so
-- past the sleepers' next looks), or it was handed back by a tracker whose look told it, or it was not
-- announced itself for an entry before it. A leased entry is pushed ahead by a visibility (longer than
-- the horizon), so it never counts. Where due entries wait for a look (the result-webhook loop looks
-- at most every 200 ms, a tracker that falls behind), most are then not sent to every worker.
local function announce_due(schedule, own, due, now)
  if due - now >= WAKE_HORIZON_MS then return end
  local first = redis.call('ZRANGE', schedule, 0, #own, 'WITHSCORES')
  for i = 1, #first, 2 do
    local mine = false
    for _, member in ipairs(own) do mine = mine or first[i] == member end
    if not mine then
      if tonumber(first[i + 1]) <= due then return end
      break
    end
  end
  announce(schedule)
end
