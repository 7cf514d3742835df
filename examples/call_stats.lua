-- Call statistics: how many calls are up right now, how many there were, and the longest.
-- Rebuilds nothing after a resync: it only says the figures may be off.

local active, total, longest_ms = {}, 0, 0
local function count(t) local n = 0 for _ in pairs(t) do n = n + 1 end return n end

agent.on("audioVideoSession", "added", function(e)
  active[e.href] = agent.now()
  total = total + 1
  agent.log.info("calls in progress", { active = count(active), total = total })
end)

agent.on("audioVideoSession", "deleted", function(e)
  local t0 = active[e.href]
  active[e.href] = nil
  if t0 then
    local ms = agent.now() - t0
    if ms > longest_ms then longest_ms = ms end
  end
  agent.log.info("calls in progress", { active = count(active), total = total, longest_s = longest_ms / 1000 })
end)

agent.on("agent", "resync", function(e)
  agent.log.warn("events may have been missed; call counts may be off", { reason = e.resource and e.resource.reason })
end)
