-- Office hours: an incoming call outside office hours is declined (the caller hears the account
-- is unavailable and can leave voicemail where the pool offers it). Office hours are wall-clock
-- times in the office's time zone, so they stay right when the clocks change. Configured in
-- config.toml:
--
--   [scripts.config.office_hours]
--   zone = "Europe/Berlin"                  # default: [scripts] time_zone
--   week = ["MON-FRI 08:30-17:30"]          # more entries for a lunch break or a Saturday
--   closed = ["2026-12-24", "2026-12-31"]   # optional: whole days closed
--   calendar = "holidays"                   # optional: a holiday file named in config.toml:
--
--   [scripts.calendars]
--   holidays = "holidays_berlin_2026.ics"   # iCalendar, relative to config.toml's folder
--
-- (The earlier `days`, `open`, `close` still work: days 1 = Monday … 7 = Sunday.)
-- Without a configuration the script does nothing (and says so once).

local c = agent.config
local NAMES = { "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN" }

if c.utc_offset ~= nil then
  error("agent.config.utc_offset is gone: set zone = \"Europe/Berlin\" (an IANA name) instead; daylight saving is then automatic")
end

-- `week`, or the older `days` + `open` + `close`.
local function week()
  if c.week ~= nil then return c.week end
  local days = {}
  for _, d in ipairs(c.days or { 1, 2, 3, 4, 5 }) do days[#days + 1] = NAMES[d] or error("agent.config.days: 1 (Monday) to 7, got " .. tostring(d)) end
  if #days == 0 then return {} end
  return { table.concat(days, ",") .. " " .. c.open .. "-" .. c.close }
end

local configured = c.week ~= nil or (c.open ~= nil and c.close ~= nil)
local hours
if configured then
  hours = { zone = c.zone, week = week(), closed = c.closed, calendar = c.calendar }
  agent.time.open(hours)   -- a mistake in the configuration fails the load, not the first call
else
  agent.log.warn("office_hours is not configured ([scripts.config.office_hours] week, zone): doing nothing")
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  if not configured or inv.direction ~= "Incoming" then return end
  local open, change = agent.time.open(hours)
  if open then return end
  agent.calls.decline(e, "Local")
  local from = agent.ucwa.one(inv._embedded and inv._embedded.from) or {}
  local back
  if change then
    local t = agent.time.zone(c.zone):date(change)
    back = string.format("%04d-%02d-%02d %02d:%02d", t.year, t.month, t.day, t.hour, t.min)
  end
  agent.log.info("declined outside office hours", { from = from.uri, back = back })
end)
