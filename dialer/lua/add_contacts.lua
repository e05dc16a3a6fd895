-- Add one batch of contacts read from a CSV; a number or contact id already in the campaign is
-- answered, never overwritten, so loads can be repeated and interrupted loads re-run.
-- KEYS: 1 clock, 2 campaign, 3 contacts, 4 ids, 5 due
-- ARGV: 1 '1' when the CSV brings its own contact ids (they must be unique), then per row:
--       number (E.164), contact id, line, record JSON, due ms
-- Returns one code per row: 'ok'; 'already' (same number from the same line: a re-run of an
-- interrupted load); 'dup:<line>' (the number came first on that line); 'dup_id:<line>' (the id did).
local check_ids = ARGV[1] == '1'
local codes = {}
local added = 0
local due = {}

local function line_of(number)
  local raw = redis.call('HGET', KEYS[3], number)
  if not raw then return '?' end
  return tostring(cjson.decode(raw).l)
end

for i = 2, #ARGV, 5 do
  local number, id, line = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HSETNX', KEYS[3], number, ARGV[i + 3]) == 0 then
    local first = line_of(number)
    if first == line then codes[#codes + 1] = 'already' else codes[#codes + 1] = 'dup:' .. first end
  else
    local holder = nil
    if check_ids and redis.call('HSETNX', KEYS[4], id, number) == 0 then
      holder = redis.call('HGET', KEYS[4], id)
      if holder == number then holder = nil end
    end
    if holder then
      -- the id belongs to another contact: this row adds nothing
      redis.call('HDEL', KEYS[3], number)
      codes[#codes + 1] = 'dup_id:' .. line_of(holder)
    else
      due[#due + 1] = ARGV[i + 4]
      due[#due + 1] = number
      added = added + 1
      codes[#codes + 1] = 'ok'
    end
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
return codes
