-- An IM bot: accepts every instant message sent to the account and answers `help`, `status`
-- (the account's presence and the calls in progress) and `calls today` (incoming calls since
-- midnight UTC). Its own messages come back as events too: it ignores them.

local DAY_MS = 24 * 60 * 60 * 1000
local HELP = "I answer: help, status, calls today"

-- Calls in progress, by conversation href (not kept: a restart starts from none).
local live = {}

local function today()
  local day = agent.now() // DAY_MS
  if agent.state.day ~= day then agent.state.day, agent.state.calls_today = day, 0 end
  return agent.state.calls_today
end

agent.on("audioVideoInvitation", "started", function(e)
  if e.resource and e.resource.direction == "Incoming" then agent.state.calls_today = today() + 1 end
end)
agent.on("audioVideoSession", "added", function(e) live[e.conversation or e.href] = true end)
agent.on("audioVideoSession", "deleted", function(e) live[e.conversation or e.href] = nil end)

local function answer(question)
  -- Spaces collapsed first, then one trimmed at each end: `gsub("%s+$", "")` would try every
  -- space of a long run (anyone can IM the bot 8,000 spaces) and hit the instruction limit.
  local q = question:lower():gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if q == "help" then return HELP end
  if q == "status" then
    local n = 0
    for _ in pairs(live) do n = n + 1 end
    return agent.me.presence() .. ", " .. n .. (n == 1 and " call" or " calls") .. " in progress"
  end
  if q == "calls today" then return "Calls today: " .. today() end
  return "Sorry, I do not know \"" .. question .. "\". " .. HELP
end

agent.on("messagingInvitation", "started", function(e)
  if e.direction == "Incoming" then agent.im.accept(e) end
end)

agent.on("message", "completed", function(e)
  if e.direction ~= "Incoming" then return end -- what the bot itself sent
  agent.im.reply(e, answer(e.text or ""))
  agent.log.info("answered", { from = e.from, question = e.text })
end)
