-- VIP calls to the first available colleague: an incoming call from someone on the VIP list is
-- answered on the phone of the first colleague (in the configured order) whose presence is
-- `Online` (the pool rings that phone and connects the caller there); when none is, the call is
-- declined, which sends the caller to voicemail where the account has it.
--
--   [scripts.config.vip_to_colleague]
--   vips = ["sip:ceo@contoso.com"]
--   colleagues = [
--     { uri = "sip:bob@contoso.com", phone = "tel:+14255550101" },
--     { uri = "sip:carol@contoso.com", phone = "tel:+14255550102" },
--   ]

local vips = {}
for _, uri in ipairs(agent.config.vips or {}) do vips[uri:lower()] = true end
local colleagues = agent.config.colleagues or {}

if #colleagues == 0 then
  agent.log.warn("vip_to_colleague is not configured ([scripts.config.vip_to_colleague] vips, colleagues): doing nothing")
end

-- The first colleague whose presence is Online, or nil.
local function available()
  for _, c in ipairs(colleagues) do
    local ok, person = pcall(agent.people.get, c.uri)
    if ok and person.presence == "Online" then return c end
    if not ok then agent.log.warn("cannot read a colleague's presence", { colleague = c.uri, error = person }) end
  end
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  if #colleagues == 0 or inv.direction ~= "Incoming" then return end
  local from = agent.ucwa.one(inv._embedded and inv._embedded.from) or {}
  if not (from.uri and vips[from.uri:lower()]) then return end
  local c = available()
  if c then
    agent.calls.accept_on_phone(e, c.phone)
    agent.log.info("VIP call answered by a colleague", { from = from.uri, colleague = c.uri })
  else
    agent.calls.decline(e)
    agent.log.info("VIP call to voicemail: no colleague available", { from = from.uri })
  end
end)
