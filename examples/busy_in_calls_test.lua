-- Tests for busy_in_calls.lua: `ucwa-agent test examples`.
test.load("busy_in_calls.lua")

-- A target without a leading `/` is relative to the application (agent.me.* asks for these).
test.answer("GET", "me/presence", 200, { availability = "Away" })
test.answer("GET", "me/note", 200, { message = "Back at 2" })

local function posts()
  local out = {}
  for _, r in ipairs(test.requests()) do
    if r.method == "POST" then table.insert(out, r.url:match("/me/(%a+)$") .. " " .. (r.body.availability or r.body.message)) end
  end
  return out
end

test.case("a call makes the account busy with the caller's name, its end restores both", function()
  test.dispatch(test.event("audioVideoInvitation", "started", { resource = {
    direction = "Incoming", _embedded = { from = { name = "Alice Smith", uri = "sip:alice@contoso.com" } } } }))
  test.dispatch(test.event("audioVideoSession", "added"))
  test.eq(posts(), { "presence Busy", "note In a call with Alice Smith" })
  test.dispatch(test.event("audioVideoSession", "deleted"))
  test.eq(posts(), { "presence Away", "note Back at 2" })
end)

test.case("a resync (a call's end may be lost) restores rather than staying Busy", function()
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 3 }))
  test.dispatch(test.event("agent", "resync", { resource = { reason = "resume" } }))
  test.eq(posts(), { "presence Busy", "note In a call", "presence Away", "note Back at 2" })
  test.eq(agent.state.calls, {})
end)

test.case("a second call at the same time keeps the account busy until both end", function()
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 1 }))
  test.dispatch(test.event("audioVideoSession", "added", { conversation = 2 }))
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 1 }))
  local restored = false
  for _, p in ipairs(posts()) do restored = restored or p:find("Away") ~= nil end
  test.eq(restored, false)
  test.dispatch(test.event("audioVideoSession", "deleted", { conversation = 2 }))
  test.eq(posts()[1], "presence Away")
end)
