-- Tests for vip_to_colleague.lua: `ucwa-agent test examples`.
test.config({
  vips = { "sip:ceo@contoso.com" },
  colleagues = {
    { uri = "sip:bob@contoso.com", phone = "tel:+14255550101" },
    { uri = "sip:carol@contoso.com", phone = "tel:+14255550102" },
  },
})
test.load("vip_to_colleague.lua")

local app = "/ucwa/oauth/v1/applications/1"

-- The directory: each colleague found by search, with this availability.
local function presence(who, availability)
  local c = app .. "/people/" .. who .. "@contoso.com"
  local contact = { uri = "sip:" .. who .. "@contoso.com", name = who, _links = {
    self = { href = c }, contactPresence = { href = c .. "/presence" },
  } }
  test.answer("GET", "people/search?query=" .. who .. "%40contoso.com", 200, { _embedded = { contact = { contact } } })
  test.answer("GET", c, 200, contact)
  test.answer("GET", c .. "/presence", 200, { availability = availability })
end

-- What the script did with a VIP's call: the phone it was answered on, or "declined".
local function ring(from)
  local inv = app .. "/communication/audioVideoInvitations/9"
  test.dispatch(test.event("audioVideoInvitation", "started", { resource = {
    direction = "Incoming",
    _links = { acceptWithPhoneAudio = { href = inv .. "/acceptWithPhoneAudio" }, decline = { href = inv .. "/decline" } },
    _embedded = { from = { uri = from } },
  } }))
  for _, r in ipairs(test.requests()) do
    if r.url:match("/acceptWithPhoneAudio$") then return r.body.phoneNumber end
    if r.url:match("/decline$") then return "declined" end
  end
end

test.case("the first Online colleague answers", function()
  presence("bob", "Busy")
  presence("carol", "Online")
  test.eq(ring("sip:CEO@contoso.com"), "tel:+14255550102")
end)

test.case("nobody Online: voicemail", function()
  presence("bob", "Away")
  presence("carol", "Offline")
  test.eq(ring("sip:ceo@contoso.com"), "declined")
end)

test.case("anyone else is left alone", function()
  test.eq(ring("sip:someone@fabrikam.com"), nil)
end)
