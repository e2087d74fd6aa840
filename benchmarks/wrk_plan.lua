-- wrk's request plan for benchmarks/bench_e2e.py: one scenario per run, chosen by BENCH_MODE,
-- reading its credentials from files in BENCH_DIR (one per line). Written by bench_e2e.py; the
-- results (percentiles in microseconds, counts) go to BENCH_OUT as JSON.
--   seen      one of the seen credentials (round robin), on one path
--   newpath   a seen credential on a path never requested before (a REST id)
--   new       a credential never presented before, on one path
--   mix       per request: 1% new, 4% new path, 95% seen
--   token     POST /token exchanging a subject token never presented before
--   jwt       keymint's own token (for Envoy's jwt_authn), on one path
local mode = os.getenv("BENCH_MODE")
local dir = os.getenv("BENCH_DIR")
local out = os.getenv("BENCH_OUT")
local path = os.getenv("BENCH_PATH")
local round = os.getenv("BENCH_ROUND") or "0"
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

local function lines(name)
  local found = {}
  local file = io.open(dir .. "/" .. name, "r")
  if file == nil then return found end
  for line in file:lines() do found[#found + 1] = line end
  file:close()
  return found
end

local seen = lines("seen.txt")
local fresh = lines(mode .. "-fresh.txt")
local keymint = lines("keymint.txt")
-- Globals, not locals: done() runs in wrk's main Lua state and reads them with thread:get.
counter = 0
used = 0
exhausted = 0
local threads = {}

setup = function(thread)
  threads[#threads + 1] = thread
end
math.randomseed(12345)

local function bearer(token)
  return {["Authorization"] = "Bearer " .. token}
end

local function next_fresh()
  if used < #fresh then
    used = used + 1
    return fresh[used]
  end
  exhausted = exhausted + 1
  return nil
end

local function seen_request()
  return wrk.format("GET", path, bearer(seen[counter % #seen + 1]))
end

local function newpath_request()
  local where = path .. "/" .. round .. "-" .. counter
  return wrk.format("GET", where, bearer(seen[counter % #seen + 1]))
end

request = function()
  counter = counter + 1
  if mode == "seen" then
    return seen_request()
  elseif mode == "newpath" then
    return newpath_request()
  elseif mode == "jwt" then
    return wrk.format("GET", path, bearer(keymint[1]))
  elseif mode == "new" then
    local token = next_fresh()
    if token == nil then return seen_request() end
    return wrk.format("GET", path, bearer(token))
  elseif mode == "token" then
    local token = next_fresh()
    if token == nil then token = seen[1] end
    local body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
      .. "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token"
      .. "&audience=" .. os.getenv("BENCH_AUDIENCE") .. "&subject_token=" .. token
    return wrk.format("POST", "/token",
      {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  elseif mode == "mix" then
    local draw = math.random(100)
    if draw == 1 then
      local token = next_fresh()
      if token ~= nil then return wrk.format("GET", path, bearer(token)) end
    elseif draw <= 5 then
      return newpath_request()
    end
    return seen_request()
  end
  error("unknown BENCH_MODE " .. tostring(mode))
end

if pause > 0 then
  delay = function() return pause end
end

done = function(summary, latency, requests)
  local points = {}
  for _, p in ipairs({1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.9,
                      99.99}) do
    points[#points + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
  end
  local errors = summary.errors
  local exhausted_total = 0
  for _, thread in ipairs(threads) do exhausted_total = exhausted_total + thread:get("exhausted") end
  local file = io.open(out, "w")
  file:write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "min_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "fresh_exhausted": %d, "percentiles_us": {%s}}',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency.min, latency.max, latency.mean, exhausted_total,
    table.concat(points, ", ")))
  file:close()
end
