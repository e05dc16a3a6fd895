-- The result-webhook outbox (dialer/outbox.py), shared by every script (prepended after the wake-ups,
-- before the prelude). A due event is announced to sleeping delivery loops (outbox_due).
-- A script that records a fact appends its event here, in the same atomic step, so a fact never
-- exists without its event. A script takes part by passing the outbox tail (Outbox.keys() and
-- Outbox.args() in Python) at the END of its KEYS and ARGV and calling outbox_open(first key index,
-- first arg index) once; without it (no destinations configured) outbox_append does nothing.
-- Tail KEYS: events, log, state, then per destination: queue, heads, pending, tries, dead
-- Tail ARGV: enabled ('1'/'0'), max events, destination count, destination ids...
local OUTBOX = nil

local function outbox_open(key_base, arg_base)
  if ARGV[arg_base] ~= '1' then return false end
  local box = {events = KEYS[key_base], log = KEYS[key_base + 1], state = KEYS[key_base + 2],
               cap = tonumber(ARGV[arg_base + 1]), dests = {}}
  for i = 1, tonumber(ARGV[arg_base + 2]) do
    local b = key_base + 3 + (i - 1) * 5
    box.dests[i] = {id = ARGV[arg_base + 2 + i], queue = KEYS[b], heads = KEYS[b + 1], pending = KEYS[b + 2],
                    tries = KEYS[b + 3], dead = KEYS[b + 4]}
  end
  OUTBOX = box
  return true
end

-- A destination's queue holds one member per undelivered event, '<ordering key>|<seq>|<event id>'
-- with score 0, so ZRANGEBYLEX finds a contact's oldest undelivered event in O(log n).
local function outbox_first(queue, okey)
  local first = redis.call('ZRANGEBYLEX', queue, '[' .. okey .. '|', '(' .. okey .. '}', 'LIMIT', 0, 1)[1]
  return first
end

-- Make a contact's oldest undelivered event at a destination due at ``due_ms`` (``nx``: unless it is
-- already scheduled), announced to sleeping delivery loops when it is the destination's next.
local function outbox_due(dest, okey, due_ms, now, nx)
  local added = nx and redis.call('ZADD', dest.heads, 'NX', due_ms, okey)
    or redis.call('ZADD', dest.heads, 'CH', due_ms, okey)
  if added > 0 then announce_due(dest.heads, {okey}, due_ms, now) end
end

-- Remove one event from a destination (delivered, given up or dropped) and make the contact's
-- next event, if any, due now.
local function outbox_advance(dest, okey, member, id, now)
  local removed = redis.call('ZREM', dest.queue, member)
  redis.call('ZREM', dest.pending, id)
  redis.call('HDEL', dest.tries, id)
  if outbox_first(dest.queue, okey) then
    outbox_due(dest, okey, now, now, false)
  else
    redis.call('ZREM', dest.heads, okey)
  end
  return removed
end

-- Over the cap, the oldest retained events go: delivered ones are history; one still pending at a
-- destination is dropped there and counted (``dropped``: metric, alert, ``dialer outbox status``).
local function outbox_trim_cap(now)
  while redis.call('ZCARD', OUTBOX.log) > OUTBOX.cap do
    local oldest = redis.call('ZPOPMIN', OUTBOX.log)
    local id = oldest[1]
    local raw = redis.call('HGET', OUTBOX.events, id)
    redis.call('HDEL', OUTBOX.events, id)
    if raw then
      local event = cjson.decode(raw)
      for _, dest in ipairs(OUTBOX.dests) do
        if redis.call('ZSCORE', dest.pending, id) then
          local member = event.key .. '|' .. string.format('%012d', event.seq) .. '|' .. id
          outbox_advance(dest, event.key, member, id, now)
          redis.call('HINCRBY', OUTBOX.state, 'dropped:' .. dest.id, 1)
        end
      end
    end
  end
end

-- Append one event: ``okey`` orders it (a contact's events reach each destination in the order they
-- were appended), ``data`` is its payload. Returns the event id (nil when the outbox is closed).
local function outbox_append(etype, okey, data, now)
  if not OUTBOX then return nil end
  local seq = redis.call('HINCRBY', OUTBOX.state, 'seq', 1)
  -- stable for the event's whole life (retries, replays): receivers deduplicate on it
  local id = 'ev_' .. now .. '_' .. seq
  redis.call('HSET', OUTBOX.events, id, cjson.encode({id = id, type = etype, at = now, seq = seq, key = okey,
                                                       data = data}))
  redis.call('ZADD', OUTBOX.log, now, id)
  local member = okey .. '|' .. string.format('%012d', seq) .. '|' .. id
  for _, dest in ipairs(OUTBOX.dests) do
    redis.call('ZADD', dest.queue, 0, member)
    redis.call('ZADD', dest.pending, now, id)
    -- the contact's earlier event, if any, is still on its way: this one waits behind it
    outbox_due(dest, okey, now, now, true)
  end
  outbox_trim_cap(now)
  return id
end
