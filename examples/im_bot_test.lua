-- Tests for im_bot.lua: `ucwa-agent test examples`.
test.load("im_bot.lua")

local conv = "/ucwa/oauth/v1/applications/1/communication/conversations/7"
test.answer("GET", conv .. "/messaging", 200, { rel = "messaging", state = "Connected",
  _links = { sendMessage = { href = conv .. "/messaging/messages" } } })
test.answer("GET", "me/presence", 200, { availability = "Online" })

-- What the bot sent (the text/plain bodies of sendMessage), after one message event.
local function ask(text, direction)
  test.dispatch(test.event("message", "completed", { href = conv .. "/messaging/messages/1", status = "Success", resource = {
    rel = "message", direction = direction or "Incoming",
    _links = {
      messaging = { href = conv .. "/messaging" },
      contact = { href = "/ucwa/oauth/v1/applications/1/people/ann@fabrikam.com" },
      plainMessage = { href = "data:text/plain;charset=utf-8," .. text },
    },
  } }))
  local sent = {}
  for _, r in ipairs(test.requests()) do
    if r.method == "POST" and r.url:match("/messaging/messages$") then table.insert(sent, r.body) end
  end
  return sent
end

test.case("an incoming invitation is accepted", function()
  test.dispatch(test.event("messagingInvitation", "started", { resource = {
    direction = "Incoming",
    _links = { accept = { href = "/ucwa/oauth/v1/applications/1/communication/messagingInvitations/3/accept" } },
  } }))
  local r = test.requests()
  test.eq(#r, 1)
  test.ok(r[1].url:match("/messagingInvitations/3/accept$"), r[1].url)
end)

test.case("help, status and calls today are answered (+ is a space)", function()
  test.eq(ask("help"), { "I answer: help, status, calls today" })
  test.eq(ask("Status"), { "Online, 0 calls in progress" })
  test.dispatch(test.event("audioVideoInvitation", "started", { resource = { direction = "Incoming" } }))
  test.eq(ask("calls+today"), { "Calls today: 1" })
  local logs = test.logs()
  test.eq(logs[#logs].fields, { from = "sip:ann@fabrikam.com", question = "calls today" })
end)

test.case("anything else gets the help, and its own messages are ignored", function()
  test.eq(ask("what%3F"), { "Sorry, I do not know \"what?\". I answer: help, status, calls today" })
  test.eq(ask("help", "Outgoing"), {})
end)

test.case("spaces around and inside a question do not matter, however many", function()
  test.eq(ask("+%09help+++"), { "I answer: help, status, calls today" })
  test.eq(ask("++Status%0D%0A"), { "Online, 0 calls in progress" })
  -- Anyone can IM the bot: 9,000 spaces between two words are answered like any question.
  local sent = ask("x" .. ("+"):rep(9000) .. "y")
  test.eq(#sent, 1)
  test.eq(sent[1], "Sorry, I do not know \"x" .. (" "):rep(9000) .. "y\". I answer: help, status, calls today")
end)

test.case("a message the pool did not embed is fetched", function()
  local href = conv .. "/messaging/messages/2"
  test.answer("GET", href, 200, { rel = "message", direction = "Incoming", _links = {
    messaging = { href = conv .. "/messaging" },
    participant = { href = conv .. "/participants/bob@contoso.com" },
    plainMessage = { href = "data:text/plain,help" },
  } })
  test.dispatch(test.event("message", "completed", { href = href, status = "Success" }))
  local sent = {}
  for _, r in ipairs(test.requests()) do
    if r.method == "POST" then table.insert(sent, r.body) end
  end
  test.eq(sent, { "I answer: help, status, calls today" })
  local logs = test.logs()
  test.eq(logs[#logs].fields.from, "sip:bob@contoso.com")
end)
