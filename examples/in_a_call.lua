-- "In a call" status: reads the session resource through the agent's own UCWA session
-- (agent.ucwa.get) and keeps whether the account is in an established call in agent.state.

agent.state.active = agent.state.active or {}

local function report()
  local n = 0
  for _ in pairs(agent.state.active) do n = n + 1 end
  local status = n > 0 and "in a call" or "available"
  if status ~= agent.state.status then
    agent.state.status = status
    agent.log.info("status " .. status, { calls = n })
  end
end

local function refresh(e)
  local r = agent.ucwa.get(e.href)
  if r.status == 200 and r.body.state == "Established" then
    agent.state.active[e.href] = true
  else
    agent.state.active[e.href] = nil
  end
  report()
end

agent.on("audioVideoSession", "added", refresh)
agent.on("audioVideoSession", "updated", refresh)
agent.on("audioVideoSession", "deleted", function(e)
  agent.state.active[e.href] = nil
  report()
end)
