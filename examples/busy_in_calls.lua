-- Busy while in a call: when an audio/video call starts, the account's presence becomes Busy
-- and its note "In a call with <name>"; when the last call ends, both go back to what they
-- were. What to restore is kept in agent.state, so a restart mid-call still restores it.

agent.state.calls = agent.state.calls or {}   -- session href -> true while the call is up

local function count()
  local n = 0
  for _ in pairs(agent.state.calls) do n = n + 1 end
  return n
end

-- What the account showed before the call. A pool sets Busy by itself once a call connects,
-- so it is read when the call rings, and a Busy read then counts as Online.
local function remember()
  if agent.state.before then return end
  local presence = agent.me.presence()
  presence = ({ Busy = "Online", IdleBusy = "Online", IdleOnline = "Online", Offline = "Online" })[presence] or presence
  agent.state.before = { presence = presence, note = agent.me.note() or "" }
end

-- Back to what it was; whatever happens, the next call starts afresh.
local function restore()
  local before = agent.state.before
  agent.state.before = nil
  agent.state.calls = {}
  if not before then return end
  local ok, err = pcall(function()
    agent.me.set_presence(before.presence)
    agent.me.set_note(before.note)
  end)
  if ok then
    agent.log.info("restored", { presence = before.presence })
  else
    agent.log.warn("could not restore presence and note", { error = tostring(err) })
  end
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  local other = agent.ucwa.one(inv._embedded and inv._embedded[inv.direction == "Outgoing" and "to" or "from"]) or {}
  agent.state.with = other.name or other.uri
  if count() == 0 then remember() end
end)

agent.on("audioVideoSession", "added", function(e)
  if count() == 0 then remember() end
  agent.state.calls[e.href] = true
  agent.me.set_presence("Busy")
  agent.me.set_note("In a call" .. (agent.state.with and (" with " .. agent.state.with) or ""))
  agent.log.info("busy", { with = agent.state.with })
  agent.state.with = nil
end)

agent.on("audioVideoSession", "deleted", function(e)
  agent.state.calls[e.href] = nil
  if count() == 0 then restore() end
end)

-- Events may have been missed (a call's end among them): restore rather than stay Busy.
agent.on("agent", "resync", function(e)
  if agent.state.before then restore() end
end)
