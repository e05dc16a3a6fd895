-- Add one batch of contacts read from a CSV; a number or contact id already in the campaign is
-- answered, never overwritten, so loads can be repeated and interrupted loads re-run.
-- KEYS: 1 clock, 2 campaign, 3 contacts, 4 ids, 5 due
-- ARGV: 1 '1' when the CSV brings its own contact ids (they must be unique); 2 the rows, packed one
--       after another as 'number line due_ms id_bytes record_bytes ' followed by the id and the
--       record JSON (campaigns/csvfile.py pack_contact)
-- Returns the number of contacts added, then (row index, code) for each row not added: 'already'
-- (same number from the same line: a re-run of an interrupted load); 'dup:<line>' (the number came
-- first on that line); 'dup_id:<line>' (the id did).
local check_ids = ARGV[1] == '1'
local data = ARGV[2]
local reply = {0}
local added = 0
local due = {}

local function line_of(number)
  local raw = redis.call('HGET', KEYS[3], number)
  if not raw then return '?' end
  return tostring(cjson.decode(raw).l)
end

local at, row = 1, 0
while at <= #data do
  local number, line, due_ms, id_size, record_size, rest =
    string.match(data, '^(%S+) (%d+) (%d+) (%d+) (%d+) ()', at)
  if not number then return redis.error_reply('add_contacts: malformed row at byte ' .. at) end
  id_size, record_size = tonumber(id_size), tonumber(record_size)
  local id = string.sub(data, rest, rest + id_size - 1)
  local record = string.sub(data, rest + id_size, rest + id_size + record_size - 1)
  at = rest + id_size + record_size
  row = row + 1
  local code = nil
  if redis.call('HSETNX', KEYS[3], number, record) == 0 then
    local first = line_of(number)
    if first == line then code = 'already' else code = 'dup:' .. first end
  else
    local holder = nil
    if check_ids and redis.call('HSETNX', KEYS[4], id, number) == 0 then
      holder = redis.call('HGET', KEYS[4], id)
      if holder == number then holder = nil end
    end
    if holder then
      -- the id belongs to another contact: this row adds nothing
      redis.call('HDEL', KEYS[3], number)
      code = 'dup_id:' .. line_of(holder)
    else
      due[#due + 1] = due_ms
      due[#due + 1] = number
      added = added + 1
    end
  end
  if code then
    reply[#reply + 1] = row
    reply[#reply + 1] = code
  end
end

-- one ZADD per 500 contacts rather than one each (unpack is bounded by Lua's C stack)
for first = 1, #due, 1000 do
  redis.call('ZADD', KEYS[5], unpack(due, first, math.min(first + 999, #due)))
end
if added > 0 then
  -- counted here, in the same atomic step as the rows, so an interrupted load never miscounts
  redis.call('HINCRBY', KEYS[2], 'n:pending', added)
  redis.call('HINCRBY', KEYS[2], 'contacts', added)
end
reply[1] = added
return reply
