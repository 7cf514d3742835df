-- Call log: one line when an audio/video session starts, changes and ends, with its
-- conversation and, at the end, how long it lasted. Start times and totals live in
-- agent.state, so a reload or a restart in the middle of a call still logs its duration.

agent.state.started = agent.state.started or {}   -- session href -> agent.now() when added
agent.state.calls = agent.state.calls or 0
agent.state.seconds = agent.state.seconds or 0

agent.on("audioVideoSession", "added", function(e)
  agent.state.started[e.href] = agent.now()
  agent.state.calls = agent.state.calls + 1
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call started", { conversation = e.conversation, session = e.href, state = state })
end)

agent.on("audioVideoSession", "updated", function(e)
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call changed", { conversation = e.conversation, state = state })
end)

agent.on("audioVideoSession", "deleted", function(e)
  local t0 = agent.state.started[e.href]
  agent.state.started[e.href] = nil
  local seconds = t0 and (agent.now() - t0) / 1000 or nil
  if seconds then agent.state.seconds = agent.state.seconds + seconds end
  agent.log.info("call ended", { conversation = e.conversation, duration_s = seconds,
    calls = agent.state.calls, total_s = agent.state.seconds })
end)

-- After a resync some sessions may have ended unseen: forget start times older than a day.
agent.on("agent", "resync", function(e)
  local now = agent.now()
  for href, t0 in pairs(agent.state.started) do
    if now - t0 > 86400000 then agent.state.started[href] = nil end
  end
end)
