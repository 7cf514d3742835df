-- VIP calls on the mobile: an incoming call from someone on the VIP list is answered on a
-- mobile phone (the pool rings it and connects the caller), so it is never missed at the desk.
--
--   [scripts.config.vip_to_mobile]
--   vips = ["sip:ceo@contoso.com", "sip:bigclient@fabrikam.com"]
--   mobile = "tel:+14255550100"

local vips = {}
for _, uri in ipairs(agent.config.vips or {}) do vips[uri:lower()] = true end
local mobile = agent.config.mobile

if not mobile then
  agent.log.warn("vip_to_mobile is not configured ([scripts.config.vip_to_mobile] mobile, vips): doing nothing")
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  if not mobile or inv.direction ~= "Incoming" then return end
  local from = agent.ucwa.one(inv._embedded and inv._embedded.from) or {}
  if not (from.uri and vips[from.uri:lower()]) then return end
  agent.calls.accept_on_phone(e, mobile)
  agent.log.info("VIP call answered on the mobile", { from = from.uri })
end)
