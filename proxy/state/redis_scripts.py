"""The Redis store's Lua scripts: every read-decide-write in one atomic step on the server.

Amounts and nonces stay decimal strings inside Lua (its numbers are doubles); only microsecond
timestamps are compared as numbers (exact below 2**53).
"""

DECIMAL_LUA = """
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function add(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48 end
    if j > 0 then s = s + string.byte(b, j) - 48 end
    out[#out + 1] = string.char(48 + s % 10)
    if s >= 10 then carry = 1 else carry = 0 end
    i = i - 1
    j = j - 1
  end
  return string.reverse(table.concat(out))
end
"""

# KEYS[1] nonce hash; ARGV: unit, value (canonical decimal), mode ("next" | "floor")
NONCE_LUA = (
    DECIMAL_LUA
    + """
local rec = redis.call('HMGET', KEYS[1], 'unit', 'last')
if rec[1] and rec[1] ~= ARGV[1] then return {'unit', rec[1]} end
local last = rec[2]
local value
if ARGV[3] == 'next' then
  if (not last) or gt(ARGV[2], last) then value = ARGV[2] else value = add(last, '1') end
else
  if last and not gt(ARGV[2], last) then return {'ok', last} end
  value = ARGV[2]
end
redis.call('HSET', KEYS[1], 'unit', ARGV[1], 'last', value)
return {'ok', value}
"""
)

# KEYS[1] record; ARGV: content hash, now, lease_until, expires, token, gc_ms
BEGIN_LUA = """
local now = tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'hash', 'state', 'lease_until', 'expires')
if r[1] and tonumber(r[4]) > now then
  if r[1] ~= ARGV[1] then return {'conflict'} end
  if r[2] == 'done' then
    local d = redis.call('HMGET', KEYS[1], 'status', 'headers', 'body')
    return {'replay', d[1], d[2], d[3]}
  end
  if tonumber(r[3]) > now then return {'inflight', r[3]} end
  redis.call('HSET', KEYS[1], 'token', ARGV[5], 'lease_until', ARGV[3], 'expires', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {'owner', '1', ARGV[5]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'inflight', 'token', ARGV[5],
           'lease_until', ARGV[3], 'expires', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'owner', '0', ARGV[5]}
"""

# KEYS[1] record; ARGV: token ('' = any), status, headers, body, expires, gc_ms
COMPLETE_LUA = """
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] ~= 'inflight' then return 0 end
if ARGV[1] ~= '' and r[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3],
           'body', ARGV[4], 'expires', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS[1] record; ARGV: token ('' = any)
ABANDON_LUA = """
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] ~= 'inflight' then return 0 end
if ARGV[1] ~= '' and r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS[1] zset of "<id>:<scaled amount>" scored by time; ARGV: since, now, id, scaled,
# cap ('' = none), gc_ms
WINDOW_LUA = (
    DECIMAL_LUA
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local total = ARGV[4]
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = add(total, string.match(m, ':(%d+)$'))
end
if ARGV[5] ~= '' and gt(total, ARGV[5]) then return total end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3] .. ':' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return total
"""
)

EXTEND_FLAG_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ends = string.match(cur, '^(%d*):')
  -- microsecond ends compared as decimal strings (no leading zeros), never as Lua numbers
  if ends == '' or (ends and (#ends > #ARGV[1] or (#ends == #ARGV[1] and ends >= ARGV[1]))) then
    return cur
  end
end
local new = ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], new, 'PX', ARGV[3])
return new
"""

UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
