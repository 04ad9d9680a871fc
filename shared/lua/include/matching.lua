-- matching.lua: can this worker run jobs of this class? The same rules as shared/matching.py
-- (the specification); tests/integration/test_match_agreement.py holds the two equal.
-- Pure: reads no key, so match.lua can evaluate it on given documents.

--- @include "common"

local function set_of(list)
  local s = {}
  if type(list) == 'table' then
    for _, v in ipairs(list) do s[v] = true end
  end
  return s
end

local function tokens(s)
  local out = {}
  for w in string.gmatch(string.lower(s), '[a-z0-9]+') do out[#out + 1] = w end
  return out
end

local function model_matches(want, name)
  local w = tokens(want)
  local h = tokens(name)
  if #w == 0 then return true end
  for i = 1, #h - #w + 1 do
    local ok = true
    for j = 1, #w do
      if h[i + j - 1] ~= w[j] then ok = false; break end
    end
    if ok then return true end
  end
  return false
end

local function version(s)
  if type(s) ~= 'string' then return nil end
  local a, b = string.match(s, '^(%d+)%.(%d+)$')
  if not a then return nil end
  return tonumber(a), tonumber(b)
end

local function gpu_fits(g, want)
  local mem = val(want.memory_gb)
  if mem and (val(g.memory_gb) or 0) < mem then return false end
  local model = val(want.model)
  if model and not model_matches(model, val(g.name) or '') then return false end
  local cc = val(want.compute_capability)
  if cc then
    local hm, hn = version(val(g.compute_capability))
    local nm, nn = version(cc)
    if not hm or not nm then return false end
    if hm < nm or (hm == nm and hn < nn) then return false end
  end
  return true
end

-- Prepared capability documents by their text, kept across calls (a memo: common.lua). A
-- claim decoded its worker's document and digested it on every call (about 16 us of Redis
-- time for a GPU worker's); the library outlives calls, so a worker that claims again finds
-- it ready. Two generations of at most CAPS_MEMO_MAX texts each (common.lua new_memo), so
-- the texts in use stay (a worker's text changes as its GPU memory fills and its models
-- load). A script sent with EVALSHA starts empty.
local CAPS_MEMO_MAX = 256
local caps_memo = new_memo(CAPS_MEMO_MAX)

local function prepare_caps_now(json)
  local c = cjson.decode(json)
  local hw = val(c.hardware) or {}
  local acc = val(c.customer_access) or {}
  local perf = val(c.performance) or {}
  local geo = val(c.geographic) or {}
  local cost = val(c.cost) or {}
  return {
    services = val(c.services) or {},
    service_set = set_of(val(c.services)),
    gpus = val(hw.gpus) or {},
    cpu_cores = val(hw.cpu_cores) or 0,
    ram_gb = val(hw.ram_gb) or 0,
    models = set_of(val(c.models)),
    -- Models loaded now (a scheduling preference, never a requirement: see choose.lua).
    warm = set_of(val(c.warm_models)),
    warm_list = val(c.warm_models) or {},
    isolation = val(acc.isolation) or 'none',
    allowed = set_of(val(acc.allowed_customers)),
    allowed_list = val(acc.allowed_customers) or {},
    denied = set_of(val(acc.denied_customers)),
    quality = set_of(val(perf.quality_levels)),
    region = val(geo.region),
    compliance = set_of(val(geo.compliance)),
    per_hour = val(cost.per_hour) or 0,
    json = json,
  }
end

-- A worker's capability document, decoded, with sets for membership tests; the same table
-- for the same text (callers never change it, but for `digest`, a function of `json`: the
-- claim's verdict memo is keyed by it, find_job.lua).
local function prepare_caps(json)
  return memoized(caps_memo, json, prepare_caps_now)
end

-- The capability JSON `json` with what mismatch never reads blanked out: each GPU's free
-- memory (`"memory_free_gb":` keeps no value) and the warm models (`"warm_models":[]`),
-- which change while a worker runs (its VRAM fills, its models load). Documents that give
-- the same text match the same classes, so the claim's verdict memo (find_job.lua) is keyed
-- by its digest and a worker keeps one memo while it runs. Text that is not as
-- Broker.encode_capabilities writes it (compact, each key once) is blanked less, never
-- wrongly: a memo per document then. mismatch must never read either field
-- (tests/unit/test_verdict_key.py).
local function matched_part(json)
  local s = string.gsub(json, '"memory_free_gb":[^,}]*', '"memory_free_gb":')
  local at = string.find(s, '"warm_models":[', 1, true)
  if not at then return s end
  local open = at + 14  -- the '['
  local pos = open + 1
  while true do
    local i = string.find(s, '[]"]', pos)
    if not i then return s end
    if string.sub(s, i, i) == ']' then return string.sub(s, 1, open) .. string.sub(s, i) end
    -- A model name: on to its closing quote, over escaped characters.
    local j = i + 1
    while true do
      local k = string.find(s, '["\\]', j)
      if not k then return s end
      if string.sub(s, k, k) == '"' then pos = k + 1; break end
      j = k + 2
    end
  end
end

-- nil when the worker can run jobs of this class now, else a short reason. `running` holds
-- the worker's leases as {customer=, isolation=} entries (for customer isolation).
local function mismatch(svc, customer, req, caps, running)
  if not caps.service_set[svc] then return 'service' end
  local hw = val(req.hardware)
  if hw then
    local gpu = val(hw.gpu)
    if gpu then
      local fitting = 0
      for _, g in ipairs(caps.gpus) do
        if gpu_fits(g, gpu) then fitting = fitting + 1 end
      end
      if fitting < (val(gpu.count) or 1) then return 'gpu' end
    end
    local cores = val(hw.cpu_cores)
    if cores and caps.cpu_cores < cores then return 'cpu_cores' end
    local ram = val(hw.ram_gb)
    if ram and caps.ram_gb < ram then return 'ram_gb' end
  end
  for _, m in ipairs(val(req.models) or {}) do
    if not caps.models[m] then return 'models' end
  end
  local perf = val(req.performance)
  if perf and val(perf.quality) and not caps.quality[perf.quality] then return 'quality' end
  local geo = val(req.geographic)
  if geo then
    local region = val(geo.region)
    if region and region ~= caps.region then return 'region' end
    for _, c in ipairs(val(geo.compliance) or {}) do
      if not caps.compliance[c] then return 'compliance' end
    end
  end
  local cost = val(req.cost)
  if cost and val(cost.max_per_hour) and caps.per_hour > cost.max_per_hour then return 'cost' end
  if caps.isolation == 'strict' and not caps.allowed[customer] then return 'customer' end
  if caps.isolation == 'loose' and caps.denied[customer] then return 'customer' end
  local wanted = val(req.customer_isolation) or 'none'
  if wanted == 'strict' and caps.isolation ~= 'strict' then return 'isolation' end
  for _, r in ipairs(running) do
    if r.customer ~= customer then
      if r.isolation == 'loose' then return 'loose_lock' end
      if wanted == 'loose' then return 'loose' end
    end
  end
  return nil
end
