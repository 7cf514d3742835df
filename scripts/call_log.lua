-- Call log: one line when an audio/video session starts, changes and ends, with its
-- conversation and, at the end, how long it lasted.

local started = {}   -- session href -> agent.now() when it was added

agent.on("audioVideoSession", "added", function(e)
  started[e.href] = agent.now()
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call started", { conversation = e.conversation, session = e.href, state = state })
end)

agent.on("audioVideoSession", "updated", function(e)
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call changed", { conversation = e.conversation, state = state })
end)

agent.on("audioVideoSession", "deleted", function(e)
  local t0 = started[e.href]
  started[e.href] = nil
  local seconds = t0 and (agent.now() - t0) / 1000 or nil
  agent.log.info("call ended", { conversation = e.conversation, duration_s = seconds })
end)
