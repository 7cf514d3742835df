-- Tests for vip_to_mobile.lua: `ucwa-agent test examples`.
test.config({ vips = { "sip:CEO@contoso.com" }, mobile = "tel:+14255550100" })
test.load("vip_to_mobile.lua")

local function ring(from)
  test.dispatch(test.event("audioVideoInvitation", "started", { resource = {
    direction = "Incoming",
    _links = { acceptWithPhoneAudio = { href = "/ucwa/oauth/v1/applications/1/communication/audioVideoInvitations/9/acceptWithPhoneAudio" } },
    _embedded = { from = { uri = from } },
  } }))
  local numbers = {}
  for _, r in ipairs(test.requests()) do
    if r.url:match("/acceptWithPhoneAudio$") then table.insert(numbers, r.body.phoneNumber) end
  end
  return numbers
end

test.case("a VIP's call is answered on the mobile (the list is case-insensitive)", function()
  test.eq(ring("sip:ceo@contoso.com"), { "tel:+14255550100" })
end)

test.case("anyone else rings at the desk", function()
  test.eq(ring("sip:someone@fabrikam.com"), {})
end)
