-- Call log: one line when a call rings (who is calling), when its audio/video session starts,
-- changes and ends (with how long it lasted), and one for every call that was not answered.
-- Callers, start times and totals live in agent.state, so a reload or a restart in the middle
-- of a call still logs who it was with and how long it lasted.

agent.state.started = agent.state.started or {}   -- session href -> agent.now() when added
agent.state.callers = agent.state.callers or {}   -- conversation id -> { uri, name, direction }
agent.state.calls = agent.state.calls or 0
agent.state.missed = agent.state.missed or 0
agent.state.seconds = agent.state.seconds or 0

-- Invitations link their conversation by a relative href, sessions sit under an absolute one:
-- the id after /conversations/ names the call in both.
local function call_id(href)
  return href and href:match("/conversations/([^/?]+)")
end

local function invitation_call(inv)
  local link = inv._links and inv._links.conversation
  return call_id(link and link.href)
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  -- The other party: the caller of an incoming call, the callee of an outgoing one.
  local other = inv._embedded and inv._embedded[inv.direction == "Outgoing" and "to" or "from"] or {}
  local id = invitation_call(inv)
  if id then
    agent.state.callers[id] = { uri = other.uri, name = other.name, direction = inv.direction }
  end
  agent.log.info("call ringing", { direction = inv.direction, with = other.uri, name = other.name, subject = inv.subject })
end)

agent.on("audioVideoInvitation", "completed", function(e)
  if e.status ~= "Failure" then return end
  local inv = e.resource or {}
  local id = invitation_call(inv)
  local who = id and agent.state.callers[id] or {}
  if id then agent.state.callers[id] = nil end
  agent.state.missed = agent.state.missed + 1
  local reason = e.reason and e.reason.subcode or (e.reason and e.reason.code) or "Unknown"
  local message = inv.direction == "Outgoing" and "call not answered" or "missed call"
  agent.log.warn(message, { with = who.uri, name = who.name, reason = reason, missed = agent.state.missed })
end)

agent.on("audioVideoSession", "added", function(e)
  agent.state.started[e.href] = agent.now()
  agent.state.calls = agent.state.calls + 1
  local who = agent.state.callers[call_id(e.conversation) or ""] or {}
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call started", { with = who.uri, name = who.name, conversation = e.conversation, state = state })
end)

agent.on("audioVideoSession", "updated", function(e)
  local state = e.resource and e.resource.state or "unknown"
  agent.log.info("call changed", { conversation = e.conversation, state = state })
end)

agent.on("audioVideoSession", "deleted", function(e)
  local t0 = agent.state.started[e.href]
  agent.state.started[e.href] = nil
  local id = call_id(e.conversation) or ""
  local who = agent.state.callers[id] or {}
  agent.state.callers[id] = nil
  local seconds = t0 and (agent.now() - t0) / 1000 or nil
  if seconds then
    -- Whole milliseconds, so sums print as 24.457, not 24.456999999999997.
    agent.state.seconds = math.floor((agent.state.seconds + seconds) * 1000 + 0.5) / 1000
  end
  agent.log.info("call ended", { with = who.uri, name = who.name, conversation = e.conversation,
    duration_s = seconds, calls = agent.state.calls, total_s = agent.state.seconds })
end)

-- After a resync some calls may have ended unseen: forget start times older than a day, and
-- callers of calls that no longer have a session or an invitation in progress.
agent.on("agent", "resync", function(e)
  local now = agent.now()
  for href, t0 in pairs(agent.state.started) do
    if now - t0 > 86400000 then agent.state.started[href] = nil end
  end
  local live = {}
  for href in pairs(agent.state.started) do live[call_id(href) or ""] = true end
  for id in pairs(agent.state.callers) do
    if not live[id] then agent.state.callers[id] = nil end
  end
end)
