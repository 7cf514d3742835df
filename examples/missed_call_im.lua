-- IM back to a missed caller: when an incoming call ends unanswered, the caller gets an
-- instant message. The text is configurable:
--
--   [scripts.config.missed_call_im]
--   text = "Sorry I missed your call - I will call you back."

local text = agent.config.text or "Sorry I missed your call. I will get back to you."

agent.on("audioVideoInvitation", "completed", function(e)
  local inv = e.resource or {}
  local why = e.reason and e.reason.subcode
  if e.status ~= "Failure" or inv.direction ~= "Incoming" or why ~= "Missed" then return end
  local from = agent.ucwa.one(inv._embedded and inv._embedded.from) or {}
  if not (from.uri and from.uri:match("^sip:")) then return end
  agent.im.send(from.uri, text)
  agent.log.info("sent an IM to a missed caller", { to = from.uri })
end)
