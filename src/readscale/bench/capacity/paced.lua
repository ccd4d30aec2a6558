-- An open-loop load for wrk (readscale bench capacity).
--
-- wrk alone is a closed loop: each connection sends its next request when the last
-- answer arrives, so a slow server slows the load down and hides its own queue
-- ("coordinated omission"). Here each thread owns a schedule of send times at a fixed
-- rate (slot k at start + k / rate) and every connection claims the next slot: delay()
-- waits until the slot is due, or sends at once when the slot is already past. How late
-- a send was behind its slot is recorded; a late send means every connection was busy,
-- i.e. the server queued. The bench counts a rate as sustained only if the achieved rate
-- is near the target and both the answer latency and the send lateness meet the
-- objective.
--
-- Arguments (after `--`): paths file, requests per second for the whole run, threads.
-- The paths file holds one "path<TAB>cookie" per line (cookie may be empty).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } readscale_timespec;
int clock_gettime(int clk_id, readscale_timespec *tp);
]]
local ts = ffi.new("readscale_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local next_index = 1
local interval_ms = 1
local start_ms = nil
local slot = 0
-- Lateness histogram: bucket b counts sends 2^(b-1) .. 2^b ms late (b = 0: under 1 ms).
late = {}
for b = 0, 20 do late[b] = 0 end
late_sends = 0

function init(args)
  local path_file, rate, nthreads = args[1], tonumber(args[2]), tonumber(args[3])
  local per_thread = rate / nthreads
  interval_ms = 1000 / per_thread
  for line in io.lines(path_file) do
    local path, cookie = line:match("^([^\t]*)\t?(.*)$")
    local headers = {}
    if cookie ~= nil and cookie ~= "" then headers["Cookie"] = cookie end
    table.insert(requests, wrk.format("GET", path, headers))
  end
  -- Threads start at different places in the list, so they do not send the same URLs in step.
  next_index = (id * 7919) % #requests + 1
end

function delay()
  local now = now_ms()
  if start_ms == nil then start_ms = now end
  local due = start_ms + slot * interval_ms
  slot = slot + 1
  local wait = due - now
  if wait > 0 then
    return wait
  end
  local behind = -wait
  local b = 0
  if behind >= 1 then b = math.min(20, math.floor(math.log(behind) / math.log(2)) + 1) end
  late[b] = late[b] + 1
  late_sends = late_sends + 1
  return 0
end

function request()
  local r = requests[next_index]
  next_index = next_index + 1
  if next_index > #requests then next_index = 1 end
  return r
end

function done(summary, latency, _)
  local hist = {}
  for b = 0, 20 do hist[b + 1] = 0 end
  for _, thread in ipairs(threads) do
    local t_late = thread:get("late")
    for b = 0, 20 do hist[b + 1] = hist[b + 1] + t_late[b] end
  end
  local errors = summary.errors
  io.write(string.format(
    'READSCALE {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "late_histogram": [%s]}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(hist, ", ")))
end
