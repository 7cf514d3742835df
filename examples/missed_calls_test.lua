-- Tests for missed_calls.lua: run with `ucwa-agent test examples`.
test.load("missed_calls.lua")

local function missed(direction, subcode)
  return test.event("audioVideoInvitation", "completed", {
    status = "Failure",
    reason = { code = "Gone", subcode = subcode },
    resource = { direction = direction, _embedded = { from = { uri = "sip:zoe@fabrikam.com", name = "Zoe" } } },
  })
end

test.case("an unanswered incoming call is logged with who called and why", function()
  test.dispatch(missed("Incoming", "Missed"))
  local logs = test.logs()
  test.eq(#logs, 1)
  test.eq(logs[1].level, "warn")
  test.eq(logs[1].message, "missed call")
  test.eq(logs[1].fields, { from = "sip:zoe@fabrikam.com", name = "Zoe", reason = "Missed", missed_total = 1 })
end)

test.case("outgoing calls and answered calls are not missed calls", function()
  test.dispatch(missed("Outgoing", "Declined"))
  test.dispatch(test.event("audioVideoInvitation", "completed", { status = "Success", resource = { direction = "Incoming" } }))
  test.eq(#test.logs(), 0)
end)

test.case("the count goes on", function()
  test.dispatch(missed("Incoming", "Declined"))
  test.eq(test.logs()[1].fields.missed_total, 2)
end)
