-- Daily summary: counts calls and missed calls in agent.state and logs the figures once a day
-- at a local time (agent.cron), labelled with the day they were counted on. Configured in
-- config.toml (all optional):
--
--   [scripts.config.daily_summary]
--   zone = "Europe/Berlin"     # default: [scripts] time_zone
--   cron = "0 0 * * *"         # when to log (default: local midnight)
--   calendar = "holidays"      # days in this [scripts.calendars] calendar get no summary:
--                              # their figures go into the next one
--
-- A summary missed while the agent was down is logged once when it starts again (catch_up).

local c = agent.config
local zone = agent.time.zone(c.zone)

local function today()
  local t = zone:date()
  return string.format("%04d-%02d-%02d", t.year, t.month, t.day)
end

agent.state.day = agent.state.day or today()
agent.state.calls = agent.state.calls or 0
agent.state.missed = agent.state.missed or 0

agent.on("audioVideoSession", "added", function() agent.state.calls = agent.state.calls + 1 end)
agent.on("audioVideoInvitation", "completed", function(e)
  if e.status == "Failure" and e.resource and e.resource.direction == "Incoming" then
    agent.state.missed = agent.state.missed + 1
  end
end)

local all_day = { zone = zone, week = { "SUN-SAT 00:00-24:00" }, calendar = c.calendar }

agent.cron(c.cron or "0 0 * * *", { zone = zone, catch_up = true, name = "daily_summary" }, function()
  -- At midnight the day that ended is the one a minute ago.
  if c.calendar and not agent.time.open(all_day, agent.now() - 60000) then return end
  agent.log.info("daily summary", { day = agent.state.day, calls = agent.state.calls, missed = agent.state.missed })
  agent.state.day, agent.state.calls, agent.state.missed = today(), 0, 0
end)
