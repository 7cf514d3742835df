-- Tests for daily_summary.lua: a summary at local midnight in Berlin, on both sides of the 2026
-- clock changes (29 March is 23 hours long, 25 October 25), and none for a holiday.
local berlin = agent.time.zone("Europe/Berlin")
local HOUR = 3600 * 1000

test.calendar("holidays", "holidays_berlin_2026.ics")
test.config({ zone = "Europe/Berlin", calendar = "holidays" })
test.clock(berlin:time{ year = 2026, month = 3, day = 28, hour = 12 })
test.load("daily_summary.lua")

local function summaries()
  local s = {}
  for _, l in ipairs(test.logs()) do
    if l.message == "daily summary" then s[#s + 1] = l.fields end
  end
  return s
end

test.case("nothing is logged until midnight", function()
  test.dispatch(test.event("audioVideoSession", "added"))
  test.dispatch(test.event("audioVideoInvitation", "completed", { status = "Failure", resource = { direction = "Incoming" } }))
  test.advance(11 * HOUR + 59 * 60000)               -- 23:59 CET
  test.eq(#summaries(), 0)
end)

test.case("at midnight the day's figures are logged once, and counts restart", function()
  test.advance(60000)                                -- 00:00 CET, 29 March
  test.eq(summaries(), { { day = "2026-03-28", calls = 1, missed = 1 } })
  test.eq({ agent.state.day, agent.state.calls }, { "2026-03-29", 0 })
end)

test.case("the 23-hour day of spring forward gets one summary, at midnight CEST", function()
  test.dispatch(test.event("audioVideoSession", "added"))
  test.advance(22 * HOUR + 59 * 60000)               -- 23:59 CEST, 29 March
  test.eq(#summaries(), 0)
  test.advance(2 * HOUR)                             -- past midnight CEST
  test.eq(summaries(), { { day = "2026-03-29", calls = 1, missed = 0 } })
  local t = berlin:date()
  test.eq({ t.day, t.hour, t.min, t.offset }, { 30, 1, 59, 7200 })
end)

test.case("the 25-hour day of fall back gets one summary", function()
  test.clock(berlin:time{ year = 2026, month = 10, day = 24, hour = 12 })
  test.advance(12 * HOUR)                            -- midnight, 25 October
  test.eq(#summaries(), 1)
  test.advance(25 * HOUR)                            -- the whole 25-hour day: one more, at its end
  local s = summaries()
  test.eq(#s, 1)
  test.eq(s[1].day, "2026-10-25")
  test.eq(berlin:date().day, 26)
end)

test.case("a holiday gets no summary; its figures go into the next day's", function()
  test.clock(berlin:time{ year = 2026, month = 10, day = 2, hour = 12 })
  test.advance(12 * HOUR)                            -- midnight after 2 October: a summary
  test.eq(#summaries(), 1)
  test.dispatch(test.event("audioVideoSession", "added"))    -- on 3 October, German Unity Day
  test.advance(24 * HOUR)                            -- midnight after the holiday: none
  test.eq(#summaries(), 0)
  test.dispatch(test.event("audioVideoSession", "added"))
  test.advance(24 * HOUR)
  test.eq(summaries(), { { day = "2026-10-03", calls = 2, missed = 0 } })
end)
