"""The Lua scripts of the write-behind queue (``readscale._async.writebehind.queue`` loads
and calls them): each runs atomically on the server, so a record, its version and the
queue's bounds change together.
"""

from __future__ import annotations

# KEYS: entry, stream, clock, the entry's lease, its tickets. ARGV: envelope, ttl ms, key,
# namespace, max length (0: none), fill channel ('': none).
# Reply: {1, version, id} when queued; {0, length} when the queue is full (nothing stored).
# The entry's fill rights go with the old value, as an invalidation removes them: a fill
# that read the database before this write (which the database does not have yet) would
# otherwise store the old value over the queued one. Its lease's waiters are woken.
ENQUEUE = """
local limit = tonumber(ARGV[5])
if limit > 0 then
  local length = redis.call('XLEN', KEYS[2])
  if length >= limit then return {0, length} end
end
local t = redis.call('TIME')
local version = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if version <= last then version = last + 1 end
local v = string.format('%.0f', version)
redis.call('SET', KEYS[3], v)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[4], KEYS[5])
local id = redis.call('XADD', KEYS[2], '*', 'k', ARGV[3], 'n', ARGV[4], 'v', v, 'e', ARGV[1])
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], KEYS[1]) end
return {1, v, id}
"""

# KEYS: acc, stream, clock. ARGV: key, delta, max length (0: none).
# Reply: {1, version, running sum of key} when added; {0, length} when the queue is full.
INCREMENT = """
local limit = tonumber(ARGV[3])
local fields = redis.call('HLEN', KEYS[1])
if limit > 0 then
  local length = redis.call('XLEN', KEYS[2]) + fields
  if length >= limit then return {0, length} end
end
local t = redis.call('TIME')
local version = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if version <= last then version = last + 1 end
local v = string.format('%.0f', version)
redis.call('SET', KEYS[3], v)
local sum = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if fields == 0 then redis.call('XADD', KEYS[2], '*', 'o', 'seal') end
return {1, v, sum}
"""

# KEYS: acc, stream. ARGV: keys per record. Moves the running sums into the stream as
# records of at most that many keys ('o' = 'sum', '+key' = delta) and empties the hash.
# Reply: the new records' ids.
SEAL = """
if redis.call('HLEN', KEYS[1]) == 0 then return {} end
local pairs = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
local per = tonumber(ARGV[1]) * 2
local ids = {}
local i = 1
while i <= #pairs do
  local fields = {'o', 'sum'}
  local last = math.min(i + per - 1, #pairs)
  for j = i, last, 2 do
    if pairs[j + 1] ~= '0' then
      fields[#fields + 1] = '+' .. pairs[j]
      fields[#fields + 1] = pairs[j + 1]
    end
  end
  if #fields > 2 then ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', unpack(fields)) end
  i = last + 1
end
return ids
"""

# KEYS: stream, dead stream. ARGV: group, number of ids, the ids, then six values per
# refused increment: key, delta, error, type, time (ms), consumer. Dead-letters each
# refused increment and acknowledges + deletes the sums records, in one step.
DEAD_INCREMENTS = """
local nids = tonumber(ARGV[2])
local i = 3 + nids
while i + 5 <= #ARGV do
  redis.call('XADD', KEYS[2], '*', 'k', ARGV[i], 'd', ARGV[i + 1], 'id', ARGV[3], 'error', ARGV[i + 2],
    'type', ARGV[i + 3], 'attempts', '1', 'at', ARGV[i + 4], 'consumer', ARGV[i + 5])
  i = i + 6
end
if nids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + nids))
  redis.call('XDEL', KEYS[1], unpack(ARGV, 3, 2 + nids))
end
return redis.call('XLEN', KEYS[1])
"""

# KEYS: stream, dead stream, cache entry. ARGV: group, envelope ('' : keep the entry),
# number of ids, the ids, then the dead-letter record's field/value pairs.
DEAD_LETTER = """
local nids = tonumber(ARGV[3])
local fields = {}
for i = 4 + nids, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
local i = 4
while i <= 3 + nids do
  local last = math.min(i + 499, 3 + nids)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
  i = last + 1
end
local dropped = 0
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
  dropped = 1
end
return {redis.call('XLEN', KEYS[1]), dropped}
"""

# KEYS: stream, dead stream, acc. ARGV: dead-letter ids. Moves each back to the queue as
# it was (same key, namespace, version and entry; an increment back into the running
# sums); returns how many were moved.
REQUEUE = """
local moved = 0
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #found == 1 then
    local f = found[1][2]
    local rec = {}
    for j = 1, #f, 2 do rec[f[j]] = f[j + 1] end
    if rec['k'] and rec['d'] then
      if redis.call('HLEN', KEYS[3]) == 0 then redis.call('XADD', KEYS[1], '*', 'o', 'seal') end
      redis.call('HINCRBY', KEYS[3], rec['k'], rec['d'])
      redis.call('XDEL', KEYS[2], ARGV[i])
      moved = moved + 1
    elseif rec['k'] and rec['v'] and rec['e'] then
      redis.call('XADD', KEYS[1], '*', 'k', rec['k'], 'n', rec['n'] or '', 'v', rec['v'], 'e', rec['e'])
      redis.call('XDEL', KEYS[2], ARGV[i])
      moved = moved + 1
    end
  end
end
return moved
"""
