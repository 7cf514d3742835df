-- Tests for call_log.lua: `ucwa-agent test` (the scripts directory).
test.load("call_log.lua")

test.case("a call's start, change and end are logged with its duration", function()
  test.dispatch(test.event("audioVideoSession", "added", { resource = { state = "Establishing" } }))
  test.advance(90000)
  test.dispatch(test.event("audioVideoSession", "updated", { resource = { state = "Established" } }))
  test.dispatch(test.event("audioVideoSession", "deleted"))
  local logs = test.logs()
  test.eq(#logs, 3)
  test.eq(logs[1].message, "call started")
  test.eq(logs[1].fields.state, "Establishing")
  test.ok(logs[1].fields.conversation:find("/communication/conversations/1$"), "the conversation href")
  test.eq(logs[2].fields.state, "Established")
  test.eq(logs[3].message, "call ended")
  test.eq(logs[3].fields.duration_s, 90)
end)

test.case("totals add up in agent.state", function()
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 2 }))
  test.advance(30000)
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 2 }))
  test.eq(agent.state.calls, 2)
  test.eq(agent.state.seconds, 120)
  test.eq(agent.state.started, {})
end)

test.case("an end without a start has no duration", function()
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 3 }))
  test.eq(test.logs()[1].fields.duration_s, nil)
end)

-- An invitation as the pool sends it: its conversation linked, the other party embedded.
local function invitation(kind, conversation, direction, fields)
  fields = fields or {}
  fields.resource = {
    direction = direction,
    subject = "Quarterly numbers",
    _links = { conversation = { href = "/ucwa/oauth/v1/applications/1/communication/conversations/" .. conversation } },
    _embedded = {
      from = { uri = "sip:alice@contoso.com", name = "Alice Smith" },
      to = { uri = "sip:demo@contoso.com", name = "Demo" },
    },
  }
  return test.event("audioVideoInvitation", kind, fields)
end

test.case("who called is logged when it rings, when it starts and when it ends", function()
  test.dispatch(invitation("started", 4, "Incoming"))
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 4 }))
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 4 }))
  local logs = test.logs()
  test.eq(logs[1].message, "call ringing")
  test.eq(logs[1].fields.with, "sip:alice@contoso.com")
  test.eq(logs[1].fields.name, "Alice Smith")
  test.eq(logs[1].fields.direction, "Incoming")
  test.eq(logs[2].fields.with, "sip:alice@contoso.com")
  test.eq(logs[3].message, "call ended")
  test.eq(logs[3].fields.name, "Alice Smith")
  test.eq(agent.state.callers, {})
end)

test.case("a missed call gets a warning line with the caller and the reason", function()
  test.dispatch(invitation("started", 5, "Incoming"))
  test.dispatch(invitation("completed", 5, "Incoming",
    { status = "Failure", reason = { code = "Gone", subcode = "Missed", message = "The call was not answered." } }))
  local logs = test.logs()
  test.eq(logs[2].level, "warn")
  test.eq(logs[2].message, "missed call")
  test.eq(logs[2].fields.with, "sip:alice@contoso.com")
  test.eq(logs[2].fields.reason, "Missed")
  test.eq(logs[2].fields.missed, 1)
  test.eq(agent.state.callers, {})
end)

test.case("an outgoing call names the callee", function()
  test.dispatch(invitation("started", 6, "Outgoing"))
  test.eq(test.logs()[1].fields.with, "sip:demo@contoso.com")
end)

test.case("agent.after refuses a delay it cannot keep", function()
  test.fails(function() agent.after(-1, print) end, "ms must be between 0 and")
end)
