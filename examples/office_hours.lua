-- Office hours: an incoming call outside office hours is declined (the caller hears the account
-- is unavailable and can leave voicemail where the pool offers it). Configured in config.toml:
--
--   [scripts.config.office_hours]
--   days = [1, 2, 3, 4, 5]     # 1 = Monday … 7 = Sunday
--   open = "08:30"
--   close = "17:30"
--   utc_offset = "+01:00"      # the office's offset from UTC (no daylight-saving rules: set it
--                              # again when the clocks change, and SIGHUP)
--
-- Without a configuration the script does nothing (and says so once).

local c = agent.config

local function minutes(hhmm, key)
  local h, m = tostring(hhmm):match("^(%d%d?):(%d%d)$")
  if not h or tonumber(h) > 24 or tonumber(m) > 59 then
    error("agent.config." .. key .. ": expected \"HH:MM\", got " .. tostring(hhmm))
  end
  return tonumber(h) * 60 + tonumber(m)
end

local function offset(text)
  local sign, h, m = tostring(text or "+00:00"):match("^([+-])(%d%d):(%d%d)$")
  if not sign then error("agent.config.utc_offset: expected \"+HH:MM\" or \"-HH:MM\", got " .. tostring(text)) end
  return (sign == "-" and -1 or 1) * (tonumber(h) * 60 + tonumber(m))
end

local configured = c.open ~= nil and c.close ~= nil
local open, close, shift, days = 0, 0, 0, {}
if configured then
  open, close, shift = minutes(c.open, "open"), minutes(c.close, "close"), offset(c.utc_offset)
  for _, d in ipairs(c.days or { 1, 2, 3, 4, 5 }) do days[d] = true end
else
  agent.log.warn("office_hours is not configured ([scripts.config.office_hours] open, close): doing nothing")
end

-- Whether `ms` (since the epoch, UTC) falls in office hours, at the office's offset.
local function in_hours(ms)
  local local_minutes = ms // 60000 + shift
  local day = local_minutes // 1440
  local weekday = (day + 3) % 7 + 1          -- 1970-01-01 was a Thursday (4)
  local minute = local_minutes % 1440
  return days[weekday] == true and minute >= open and minute < close
end

agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource or {}
  if not configured or inv.direction ~= "Incoming" or in_hours(agent.now()) then return end
  agent.calls.decline(e, "Local")
  local from = agent.ucwa.one(inv._embedded and inv._embedded.from) or {}
  agent.log.info("declined outside office hours", { from = from.uri })
end)
