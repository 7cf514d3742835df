-- Tests for incoming_call_webhook.lua (agent.config is set before loading, as config.toml would).
agent.config.url = "https://chat.example.com/hooks/T000/B000"
test.load("incoming_call_webhook.lua")

local function invitation(direction)
  return test.event("audioVideoInvitation", "started", { resource = {
    direction = direction, subject = "Quarterly numbers",
    _embedded = { from = { uri = "sip:ann@fabrikam.com", name = "Ann" } },
  } })
end

test.case("an incoming call posts who is calling", function()
  test.dispatch(invitation("Incoming"))
  local sent = test.requests()
  test.eq(#sent, 1)
  test.eq(sent[1].method, "POST")
  test.eq(sent[1].url, "https://chat.example.com/hooks/T000/B000")
  test.eq(sent[1].body, { text = "Incoming call from Ann: Quarterly numbers" })
  test.eq(test.logs()[1].message, "webhook sent")
end)

test.case("outgoing calls post nothing", function()
  test.dispatch(invitation("Outgoing"))
  test.eq(#test.requests(), 0)
end)

test.case("a refusing webhook is logged", function()
  test.answer("POST", "https://chat.example.com/hooks/T000/B000", 503, "busy")
  test.dispatch(invitation("Incoming"))
  local logs = test.logs()
  test.eq(logs[#logs].message, "webhook refused")
  test.eq(logs[#logs].fields.status, 503)
end)
