-- Posts to a chat service's incoming webhook when an incoming call starts ringing.
-- config.toml:
--   [scripts]
--   http_allow = ["chat.example.com"]
--   [scripts.config.incoming_call_webhook]
--   url = "https://chat.example.com/hooks/T000/B000"

local url = agent.config.url

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource
  if not url or not inv or inv.direction ~= "Incoming" then return end
  local from = inv._embedded and inv._embedded.from or {}
  local who = from.name or from.uri or "someone"
  local r = agent.http.request{
    method = "POST",
    url = url,
    body = { text = "Incoming call from " .. who .. (inv.subject and (": " .. inv.subject) or "") },
    timeout = 5000,
  }
  if r.status >= 300 then
    agent.log.warn("webhook refused", { status = r.status })
  else
    agent.log.info("webhook sent", { from = from.uri })
  end
end)
