-- Tests for office_hours.lua (the test clock starts on Thursday 2026-01-01 00:00 UTC).
local function declines()
  local n = 0
  for _, r in ipairs(test.requests()) do
    if r.method == "POST" and r.url:match("/decline$") then n = n + 1 end
  end
  return n
end

local function ring()
  test.dispatch(test.event("audioVideoInvitation", "started", { resource = {
    direction = "Incoming",
    _links = { decline = { href = "/ucwa/oauth/v1/applications/1/communication/audioVideoInvitations/7/decline" } },
    _embedded = { from = { uri = "sip:alice@contoso.com" } },
  } }))
  return declines()
end

test.config({ days = { 1, 2, 3, 4, 5 }, open = "08:30", close = "17:30", utc_offset = "+01:00" })
test.load("office_hours.lua")

test.case("a call at 01:00 local time is declined", function()
  test.eq(ring(), 1)
  test.eq(test.logs()[1].fields.from, "sip:alice@contoso.com")
end)

test.case("a call at 10:00 local time on a Thursday rings", function()
  test.advance(9 * 3600000)                  -- 09:00 UTC = 10:00 at +01:00
  test.eq(ring(), 0)
end)

test.case("closing time is outside office hours", function()
  test.advance(7.5 * 3600000)                -- 17:30 local
  test.eq(ring(), 1)
end)

test.case("Saturday is not an office day", function()
  test.advance(2 * 24 * 3600000 - 7 * 3600000)   -- Saturday 10:30 local
  test.eq(ring(), 1)
end)
