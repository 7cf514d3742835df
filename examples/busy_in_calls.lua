-- Busy while in a call: when an audio/video call starts, the account's presence becomes Busy
-- and its note "In a call with <name>"; when the last call ends, both go back to what they
-- were. What to restore is kept in agent.state, so a restart mid-call still restores it.

agent.state.calls = agent.state.calls or {}   -- session href -> true while the call is up

local function count()
  local n = 0
  for _ in pairs(agent.state.calls) do n = n + 1 end
  return n
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  local other = agent.ucwa.one(inv._embedded and inv._embedded[inv.direction == "Outgoing" and "to" or "from"]) or {}
  agent.state.with = other.name or other.uri
end)

agent.on("audioVideoSession", "added", function(e)
  if count() == 0 then
    agent.state.before = { presence = agent.me.presence(), note = agent.me.note() or "" }
  end
  agent.state.calls[e.href] = true
  agent.me.set_presence("Busy")
  agent.me.set_note("In a call" .. (agent.state.with and (" with " .. agent.state.with) or ""))
  agent.log.info("busy", { with = agent.state.with })
end)

agent.on("audioVideoSession", "deleted", function(e)
  agent.state.calls[e.href] = nil
  if count() > 0 or not agent.state.before then return end
  local before = agent.state.before
  agent.me.set_presence(before.presence == "Offline" and "Online" or before.presence)
  agent.me.set_note(before.note)
  agent.state.before = nil
  agent.log.info("restored", { presence = before.presence })
end)
