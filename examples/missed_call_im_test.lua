-- Tests for missed_call_im.lua: `ucwa-agent test examples`.
test.config({ text = "Missed you, call back?" })
test.load("missed_call_im.lua")

local function ended(subcode, direction)
  test.dispatch(test.event("audioVideoInvitation", "completed", {
    status = "Failure",
    reason = { code = "Gone", subcode = subcode },
    resource = { direction = direction, _embedded = { from = { uri = "sip:alice@contoso.com" } } },
  }))
  local sent = {}
  for _, r in ipairs(test.requests()) do
    if r.method == "POST" and r.url:match("/messagingInvitations$") then
      table.insert(sent, r.body.to .. " " .. r.body._links.message.href)
    end
  end
  return sent
end

test.case("a missed incoming call gets an IM with the configured text", function()
  test.eq(ended("Missed", "Incoming"), { "sip:alice@contoso.com data:text/plain;charset=utf-8,Missed%20you%2C%20call%20back%3F" })
  test.eq(test.logs()[1].fields.to, "sip:alice@contoso.com")
end)

test.case("a declined call or an outgoing one does not", function()
  test.eq(ended("Declined", "Incoming"), {})
  test.eq(ended("Missed", "Outgoing"), {})
end)
