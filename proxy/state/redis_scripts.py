"""The Redis store's Lua scripts: every read-decide-write in one atomic step on the server.

Amounts and nonces stay decimal strings inside Lua (its numbers are doubles); only microsecond
timestamps are compared as numbers (exact below 2**53). Lua functions shared by several scripts
(BEGIN_FN, WINDOW_HIT_FN) are defined once and prepended, so each piece of logic has one source.
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

# The claim of a client order id: one function, so the plain claim (BEGIN_LUA) and the claim
# that also spends the order's weight (CLAIM_SPEND_LUA) run the same code.
# key: the record; hash, now, lease_until, expires (microseconds), token, gc_ms: strings
BEGIN_FN = """
local function begin(key, hash, now_s, lease_until, expires, token, gc_ms)
  local now = tonumber(now_s)
  local r = redis.call('HMGET', key, 'hash', 'state', 'lease_until', 'expires')
  if r[1] and tonumber(r[4]) > now then
    if r[1] ~= hash then return {'conflict'} end
    if r[2] == 'done' then
      local d = redis.call('HMGET', key, 'status', 'headers', 'body')
      return {'replay', d[1], d[2], d[3]}
    end
    if tonumber(r[3]) > now then return {'inflight', r[3]} end
    redis.call('HSET', key, 'token', token, 'lease_until', lease_until, 'expires', expires)
    redis.call('PEXPIRE', key, gc_ms)
    return {'owner', '1', token}
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'hash', hash, 'state', 'inflight', 'token', token,
             'lease_until', lease_until, 'expires', expires)
  redis.call('PEXPIRE', key, gc_ms)
  return {'owner', '0', token}
end
"""

# KEYS[1] record; ARGV: content hash, now, lease_until, expires, token, gc_ms
BEGIN_LUA = BEGIN_FN + "return begin(KEYS[1], unpack(ARGV, 1, 6))\n"

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

# The sliding window counter of proxy.guards.rate_limits (``decide`` and ``_roll``), atomic per
# key. key: a hash {b = bucket, p = previous count, c = current count}; now_s: microseconds, or
# '' for the server's clock (one clock for every host); window_s: microseconds. Returns
# {1, 0} (spent) or {0, retry_after in whole seconds} (nothing written).
# Integer arithmetic on doubles: exact while every product stays below 2**53 (a count times the
# window in microseconds: e.g. 150 million a minute, 100,000 a day); beyond that it rounds.
# ceil_div by fmod (exact on doubles), never floor(n / d), whose quotient may round up.
WINDOW_HIT_FN = """
local function ceil_div(n, d)
  local r = math.fmod(n, d)
  local q = (n - r) / d
  if r > 0 then q = q + 1 end
  return q
end
local function int(x) return string.format('%.0f', x) end  -- tostring() would round to 14 digits
local function window_hit(key, now_s, window_s, limit_s, cost_s)
  local now
  if now_s == '' then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  else
    now = tonumber(now_s)
  end
  local window, limit, cost = tonumber(window_s), tonumber(limit_s), tonumber(cost_s)
  local elapsed = math.fmod(now, window)
  local bucket = (now - elapsed) / window
  local prev, cur = 0, 0
  local row = redis.call('HMGET', key, 'b', 'p', 'c')
  if row[1] then
    local b = tonumber(row[1])
    if b > bucket then  -- a clock went back: count from the start of the stored window
      bucket, elapsed = b, 0
    end
    if b == bucket then
      prev, cur = tonumber(row[2]), tonumber(row[3])
    elseif b == bucket - 1 then
      prev = tonumber(row[3])
    end
  end
  local remaining = window - elapsed
  local room = limit - cur - cost
  if prev * remaining <= room * window then
    redis.call('HSET', key, 'b', int(bucket), 'p', int(prev), 'c', int(cur + cost))
    redis.call('PEXPIRE', key, int(ceil_div(2 * window, 1000) + 1000))
    return {1, 0}
  end
  local wait
  if cost > limit then
    wait = ceil_div(window, 1000000)
  elseif room < 0 then
    wait = ceil_div(remaining * cur - room * window, cur * 1000000)
  else
    wait = ceil_div(prev * remaining - room * window, prev * 1000000)
  end
  if wait < 1 then wait = 1 end
  return {0, wait}
end
"""

# KEYS[1] counter; ARGV: now ('' = the server's clock), window (us), limit, cost
WINDOW_HIT_LUA = WINDOW_HIT_FN + "return window_hit(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"

# The claim and the order's weight in one atomic step (proxy.state.batches): the weight is
# spent only by a new owner (not a retry whose earlier attempt is unknown); when it does not
# fit, the claim is undone (deleting the record restores "absent or expired", which is all
# ``begin`` found) and the answer is {'refused', retry_after}.
# KEYS[1] record, KEYS[2] counter; ARGV[1..6] as BEGIN_LUA, ARGV[7..10] as WINDOW_HIT_LUA
CLAIM_SPEND_LUA = BEGIN_FN + WINDOW_HIT_FN + """
local r = begin(KEYS[1], unpack(ARGV, 1, 6))
if r[1] ~= 'owner' or r[2] ~= '0' then return r end
local hit = window_hit(KEYS[2], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
if hit[1] == 1 then return r end
redis.call('DEL', KEYS[1])
return {'refused', hit[2]}
"""
