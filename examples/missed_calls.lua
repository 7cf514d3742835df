-- Missed-call tracker: an incoming invitation that completes with Failure never became a
-- session. Logs who called and why it was not answered, and keeps a running count.

local missed = 0

agent.on("audioVideoInvitation", "completed", function(e)
  if e.status ~= "Failure" then return end
  local inv = e.resource or {}
  if inv.direction ~= "Incoming" then return end
  missed = missed + 1
  local from = inv._embedded and inv._embedded.from or {}
  local why = e.reason and e.reason.subcode or "Unknown"
  agent.log.warn("missed call", { from = from.uri, name = from.name, reason = why, missed_total = missed })
end)
