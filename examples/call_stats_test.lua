-- Tests for call_stats.lua.
test.load("call_stats.lua")

test.case("counts calls in progress and the longest one", function()
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 1 }))
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 2 }))
  test.advance(45000)
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 1 }))
  local logs = test.logs()
  test.eq(logs[2].fields, { active = 2, total = 2 })
  test.eq(logs[3].fields, { active = 1, total = 2, longest_s = 45 })
end)

test.case("a resync is reported", function()
  test.dispatch(test.event("agent", "resync", { resource = { reason = "resume" } }))
  local logs = test.logs()
  test.eq(logs[1].level, "warn")
  test.eq(logs[1].fields.reason, "resume")
end)
