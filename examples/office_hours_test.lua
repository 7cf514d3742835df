-- Tests for office_hours.lua: Berlin office hours on both sides of both 2026 clock changes
-- (29 March, 25 October) and on holidays from holidays_berlin_2026.ics.
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

local berlin = agent.time.zone("Europe/Berlin")
local function at(y, mo, d, h, mi) test.clock(berlin:time{ year = y, month = mo, day = d, hour = h, min = mi or 0 }) end

test.calendar("holidays", "holidays_berlin_2026.ics")
test.config({ zone = "Europe/Berlin", week = { "MON-FRI 08:30-17:30" }, closed = { "2026-12-31" }, calendar = "holidays" })
test.load("office_hours.lua")

test.case("a call at night is declined, saying when the office opens", function()
  at(2026, 1, 7, 1)
  test.eq(ring(), 1)
  test.eq(test.logs()[1].fields, { from = "sip:alice@contoso.com", back = "2026-01-07 08:30" })
end)

test.case("spring forward: 08:15 local is closed before and after, 08:55 open", function()
  test.clock(1774595700000)                  -- Fri 27 March 07:15Z = 08:15 CET
  test.eq(ring(), 1)
  test.clock(1774853700000)                  -- Mon 30 March 06:55Z = 08:55 CEST (at +01:00: 07:55)
  test.eq(ring(), 0)
  at(2026, 3, 30, 8, 15)
  test.eq(ring(), 1)
end)

test.case("fall back: 07:15Z is 09:15 CEST before and 08:15 CET after", function()
  test.clock(1792653300000)                  -- Thu 22 October 07:15Z
  test.eq(ring(), 0)
  test.clock(1793085300000)                  -- Tue 27 October 07:15Z
  test.eq(ring(), 1)
  at(2026, 10, 28, 17, 29)
  test.eq(ring(), 0)
  at(2026, 10, 28, 17, 30)
  test.eq(ring(), 1)
end)

test.case("holidays from the calendar and closed dates", function()
  at(2026, 4, 3, 10)                         -- Good Friday
  test.eq(ring(), 1)
  test.eq(test.logs()[1].fields.back, "2026-04-07 08:30", "Easter Monday is a holiday too")
  at(2026, 12, 24, 11)                       -- Christmas Eve morning: open
  test.eq(ring(), 0)
  at(2026, 12, 24, 13)                       -- the afternoon is closed (a dated event)
  test.eq(ring(), 1)
  at(2026, 12, 31, 10)                       -- closed = {"2026-12-31"}
  test.eq(ring(), 1)
end)

test.case("Saturday is not an office day", function()
  at(2026, 1, 10, 10, 30)
  test.eq(ring(), 1)
end)
