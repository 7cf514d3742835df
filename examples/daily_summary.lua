-- Daily summary: counts calls and missed calls per day in agent.state and, on a timer, logs
-- yesterday's figures once the day has turned (UTC).

agent.state.day = agent.state.day or os.date("!%Y-%m-%d", agent.now() // 1000)
agent.state.calls = agent.state.calls or 0
agent.state.missed = agent.state.missed or 0

agent.on("audioVideoSession", "added", function() agent.state.calls = agent.state.calls + 1 end)
agent.on("audioVideoInvitation", "completed", function(e)
  if e.status == "Failure" and e.resource and e.resource.direction == "Incoming" then
    agent.state.missed = agent.state.missed + 1
  end
end)

agent.every(60000, function()
  local today = os.date("!%Y-%m-%d", agent.now() // 1000)
  if today == agent.state.day then return end
  agent.log.info("daily summary", { day = agent.state.day, calls = agent.state.calls, missed = agent.state.missed })
  agent.state.day, agent.state.calls, agent.state.missed = today, 0, 0
end)
