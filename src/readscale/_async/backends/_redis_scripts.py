"""The Lua scripts of the Redis backend: the lease and tombstone protocol, run atomically
on the server (``readscale._async.backends.redis`` registers and calls them).

Every script's keys are an entry and its companions (``readscale._core.cache.keys``), so
they share one cluster slot and run on Redis Cluster too.
"""

from __future__ import annotations

# KEYS: value, lease, tombstone, tickets. ARGV: token, lease ms.
LEASE = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, redis.call('GET', KEYS[3]) or ''}
end
return {3}
"""
# KEYS: value, lease, tombstone, tickets. ARGV: ticket, ticket ms.
# A ticket is a field of the key's ticket hash; the hash lives as long as its youngest ticket.
TICKET = """
redis.call('HSET', KEYS[4], ARGV[1], 1)
if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return redis.call('GET', KEYS[3]) or ''
"""
# KEYS: value, lease, tombstone, tickets. ARGV: token, value, ms, channel, source LSN (hex or '').
# The value is stored only if the lease (or ticket) still holds AND the source read is at
# or past the tombstone's LSN: a fill from a lagging replica cannot store old data.
FILL = """
local ticket = string.sub(ARGV[1], 1, 2) == 't~'
if ticket then
  if redis.call('HDEL', KEYS[4], ARGV[1]) == 0 then return 0 end
elseif redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
else
  return 0
end
local tomb = redis.call('GET', KEYS[3])
local stored = 0
if tomb and (ARGV[5] == '' or ARGV[5] < tomb) then
  stored = -1
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  stored = 1
end
redis.call('PUBLISH', ARGV[4], KEYS[1])
return stored
"""
# KEYS: value, lease, tombstone, tickets. ARGV: LSN (16 hex digits), tombstone ms, channel.
# Removes the value, the lease and every ticket (so in-flight fills are refused) and
# records the change's LSN. Neither the LSN nor the expiry of a tombstone ever goes down.
INVALIDATE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[4])
local lsn = ARGV[1]
local tomb = redis.call('GET', KEYS[3])
if tomb and tomb > lsn then lsn = tomb end
local ms = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[3])
if left > ms then ms = left end
redis.call('SET', KEYS[3], lsn, 'PX', ms)
redis.call('PUBLISH', ARGV[3], KEYS[1])
return existed
"""
# KEYS: value, lease, tombstone, tickets. ARGV: LSN, tombstone ms, channel, ticket, ticket ms.
# INVALIDATE, then TICKET, in one call (a write-through's first step): the tombstone's LSN.
INVALIDATE_FOR_WRITE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
local lsn = ARGV[1]
local tomb = redis.call('GET', KEYS[3])
if tomb and tomb > lsn then lsn = tomb end
local ms = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[3])
if left > ms then ms = left end
redis.call('SET', KEYS[3], lsn, 'PX', ms)
redis.call('PUBLISH', ARGV[3], KEYS[1])
redis.call('HSET', KEYS[4], ARGV[4], 1)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return lsn
"""
# KEYS: counter, floor. ARGV: LSN (16 hex digits), floor ms. The floor grows as a tombstone does.
BUMP = """
local v = redis.call('INCR', KEYS[1])
local lsn = ARGV[1]
local floor = redis.call('GET', KEYS[2])
if floor and floor > lsn then lsn = floor end
local ms = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[2])
if left > ms then ms = left end
redis.call('SET', KEYS[2], lsn, 'PX', ms)
return v
"""
# KEYS: value, lease, tombstone, tickets. ARGV: token, channel.
RELEASE = """
if string.sub(ARGV[1], 1, 2) == 't~' then
  redis.call('HDEL', KEYS[4], ARGV[1])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
"""

# Compare and set (a cache-contract face's incr, decr and touch): replace the value only
# if it is still the one the caller read. ARGV: expected, new value, TTL in ms.
SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
