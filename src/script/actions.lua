-- agent.me, agent.calls, agent.im and agent.people: acting on the account, on calls and on
-- messages, and reading the directory, over agent.ucwa. Every href
-- comes from a link the pool gave (the application's `me`, an invitation's `decline`, a
-- conversation's audioVideo); a resource without the link raises an error saying which.
local agent, user_level, native = ...
local ucwa = agent.ucwa
-- Taken now: a script that reassigns a global does not break these functions.
local type, error, tostring, pcall, ipairs, pairs, setmetatable = type, error, tostring, pcall, ipairs, pairs, setmetatable
local isyieldable = coroutine.isyieldable
local format, byte, char, random, tonumber = string.format, string.byte, string.char, math.random, tonumber

-- The error names the script's line that called agent.me/calls/im (not a line of this chunk).
local function fail(what, text) error(what .. ": " .. text, user_level()) end

-- The answer, or an error naming the status and the pool's subcode.
local function ok(r, what)
  if r.status >= 300 then
    local b = type(r.body) == "table" and r.body or {}
    fail(what, "HTTP " .. r.status .. (b.code and (" " .. b.code) or "") .. (b.subcode and ("/" .. b.subcode) or "")
      .. (b.message and (": " .. b.message) or ""))
  end
  return r
end

local function link(resource, rel, what, why)
  local l = type(resource) == "table" and resource._links and ucwa.one(resource._links[rel])
  if not (l and l.href) then fail(what, "no `" .. rel .. "` link" .. (why or "")) end
  return l.href
end

-- `me`, embedded in the application or linked from it.
local function me(what)
  local app_href = ucwa.application()
  local app = ok(ucwa.get(app_href), what).body
  local m = app._embedded and ucwa.one(app._embedded.me)
  if m then return m end
  local l = app._links and ucwa.one(app._links.me)
  return ok(ucwa.get(l and l.href or (app_href .. "/me")), what).body
end

agent.me = {}

function agent.me.presence()
  local what = "agent.me.presence"
  return ok(ucwa.get(link(me(what), "presence", what, " (not available yet?)")), what).body.availability
end

function agent.me.set_presence(availability)
  local what = "agent.me.set_presence"
  if type(availability) ~= "string" then fail(what, "expected an availability such as \"Busy\"") end
  ok(ucwa.post(link(me(what), "presence", what, " (not available yet?)"), { availability = availability }), what)
end

function agent.me.note()
  local what = "agent.me.note"
  return ok(ucwa.get(link(me(what), "note", what, " (not available yet?)")), what).body.message
end

function agent.me.set_note(text)
  local what = "agent.me.set_note"
  if type(text) ~= "string" then fail(what, "expected a text") end
  ok(ucwa.post(link(me(what), "note", what, " (not available yet?)"), { message = text, type = "Personal" }), what)
end

agent.calls = {}

-- The invitation resource of an event of `rel` (as embedded, or fetched), or the resource itself.
local function invitation_of(rel, x, what)
  if type(x) ~= "table" then fail(what, "expected " .. (rel:match("^[aeiou]") and "an " or "a ") .. rel .. " event or resource") end
  if x.rel == rel and x.href and x.type then
    return x.resource or ok(ucwa.get(x.href), what).body
  end
  return x
end

-- The invitation resource of an audioVideoInvitation event (as embedded, or fetched).
local function invitation(x, what)
  return invitation_of("audioVideoInvitation", x, what)
end

function agent.calls.decline(x, reason)
  local what = "agent.calls.decline"
  local href = link(invitation(x, what), "decline", what, " (only a ringing incoming call can be declined)")
  ok(ucwa.post(href, reason and { reason = reason } or nil), what)
end

function agent.calls.cancel(x)
  local what = "agent.calls.cancel"
  ok(ucwa.post(link(invitation(x, what), "cancel", what, " (only a ringing outgoing call can be cancelled)")), what)
end

-- Hangs up the audio/video of a conversation: an href, or an event or resource of the call.
function agent.calls.hangup(x)
  local what = "agent.calls.hangup"
  local conv = type(x) == "string" and x or (type(x) == "table" and (x.conversation
    or (x._links and x._links.conversation and x._links.conversation.href)))
  if not conv then fail(what, "expected a conversation href, or an event of the call") end
  local av = ok(ucwa.get(link(ok(ucwa.get(conv), what).body, "audioVideo", what)), what).body
  ok(ucwa.post(link(av, "stopAudioVideo", what, " (the call is not connected)")), what)
end

-- Starts an audio/video call from the application's communication (`startAudioVideo`):
-- `spec.to` a SIP URI, `spec.subject` optional. Gives the invitation resource the pool answered.
function agent.calls.start(spec)
  local what = "agent.calls.start"
  -- A SIP URI (or a tel: number) without spaces or control characters (a CRLF would reach the
  -- pool's request), of a sane length: anything else is refused before a request is made.
  local to = type(spec) == "table" and spec.to
  if type(to) ~= "string" or #to > 512 or not (to:match("^sip:[^%s%c]+@[^%s%c]+$") or to:match("^tel:%+?[%d%-%.%(%)]+$")) then
    fail(what, "expected {to = \"sip:user@domain\" (or \"tel:+number\"), subject = …}")
  end
  local app = ok(ucwa.get(ucwa.application()), what).body
  local comm = app._embedded and ucwa.one(app._embedded.communication)
  local href = link(comm, "startAudioVideo", what, " (the pool offers no audio/video here)")
  local operation = format("%08x%08x", random(0, 0x7fffffff), random(0, 0x7fffffff))
  return ok(ucwa.post(href, { to = spec.to, subject = spec.subject, operationId = operation }), what).body
end

-- Call forwarding (me's callForwardingSettings): what is on, and where to.
local function forwarding_settings(what)
  local cfs = ok(ucwa.get(link(me(what), "callForwardingSettings", what)), what).body
  return cfs
end

function agent.me.forwarding()
  local what = "agent.me.forwarding"
  local cfs = forwarding_settings(what)
  local out = { setting = cfs.activeSetting }
  local rel = ({ ImmediateForward = "immediateForwardSettings", SimultaneousRing = "simultaneousRingSettings" })[cfs.activeSetting]
  if rel then out.target = ok(ucwa.get(link(cfs, rel, what)), what).body.target end
  return out
end

-- {immediate = "sip:…" | "tel:…" | "voicemail" | "off"} or {simultaneous_ring = "sip:…" | "tel:…"}.
function agent.me.set_forwarding(spec)
  local what = "agent.me.set_forwarding"
  if type(spec) ~= "table" or (spec.immediate == nil) == (spec.simultaneous_ring == nil) then
    fail(what, "expected {immediate = \"sip:…\"|\"tel:…\"|\"voicemail\"|\"off\"} or {simultaneous_ring = \"sip:…\"|\"tel:…\"}")
  end
  local cfs = forwarding_settings(what)
  if spec.immediate == "off" then
    ok(ucwa.post(link(cfs, "turnOffCallForwarding", what)), what)
  elseif spec.immediate == "voicemail" then
    local s = ok(ucwa.get(link(cfs, "immediateForwardSettings", what)), what).body
    ok(ucwa.post(link(s, "immediateForwardToVoicemail", what)), what)
  elseif spec.immediate then
    local s = ok(ucwa.get(link(cfs, "immediateForwardSettings", what)), what).body
    ok(ucwa.post(link(s, "immediateForwardToContact", what), { target = spec.immediate }), what)
  else
    local s = ok(ucwa.get(link(cfs, "simultaneousRingSettings", what)), what).body
    ok(ucwa.post(link(s, "simultaneousRingToContact", what), { target = spec.simultaneous_ring }), what)
  end
end

agent.im = {}

local function percent(text)
  return (text:gsub("[^%w%-%._~ ]", function(c) return format("%%%02X", byte(c)) end):gsub(" ", "%%20"))
end

-- `text` without its `<…>` tags. `gsub("<[^>]*>", "")` alone scans to the end from each `<`
-- with no `>` after it, so a sender's HTML message of 8,000 `<` took the reader's whole
-- instruction limit; only the text up to the last `>` can hold a tag, and there every `<`
-- finds its `>`.
local function without_tags(text)
  local last = text:match("^.*()>")
  if not last then return text end
  return text:sub(1, last):gsub("<[^>]*>", "") .. text:sub(last + 1)
end

-- `data:text/plain[;charset=utf-8],Hi+there%21` → "Hi there!" (`+` is a space, as pools send it).
local function data_text(href)
  if type(href) ~= "string" then return nil end
  local kind, data = href:match("^[Dd][Aa][Tt][Aa]:([^,]*),(.*)$")
  if not kind or not kind:lower():find("^text/") or kind:lower():find(";base64") then return nil end
  local text = data:gsub("%+", " "):gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end)
  if kind:lower():find("^text/html") then text = without_tags(text) end
  return text
end

-- The SIP URI a `people/<uri>` or `participants/<uri>` href names, if it does.
local function uri_of_href(href)
  local last = type(href) == "string" and href:match("/([^/?]+)$")
  return last and last:find("@") and ("sip:" .. last:gsub("^sip:", "")) or nil
end

local function text_of(what, text)
  if type(text) ~= "string" or text == "" then fail(what, "expected a message text") end
  if #text > 10000 then fail(what, "a message has at most 10000 characters") end
end

-- The messagingInvitation resource of an event (as embedded, or fetched), or the resource itself.
local function im_invitation(x, what)
  return invitation_of("messagingInvitation", x, what)
end

-- The `messaging` href of a conversation: its href, or an event or resource of it.
local function messaging_of(x, what)
  local res = type(x) == "table" and (x.type and x.href and x.resource or x) or nil
  -- A message event whose message was not embedded: the message links its messaging.
  if res == x and x.rel == "message" and x.type and x.href then res = ok(ucwa.get(x.href), what).body end
  local l = res and res._links
  if l and l.messaging then return ucwa.one(l.messaging).href end
  if res and res.rel == "messaging" and l and l.self then return ucwa.one(l.self).href end
  local conv = type(x) == "string" and x or (type(x) == "table" and (x.conversation
    or (l and l.conversation and ucwa.one(l.conversation).href)))
  if type(conv) ~= "string" then fail(what, "expected a conversation href, or an event of the conversation") end
  return link(ok(ucwa.get(conv), what).body, "messaging", what)
end

-- Accepts an incoming IM (its messagingInvitation event or resource). Gives the conversation's href.
function agent.im.accept(x)
  local what = "agent.im.accept"
  local inv = im_invitation(x, what)
  ok(ucwa.post(link(inv, "accept", what, " (only a waiting incoming invitation can be accepted)")), what)
  local c = inv._links and ucwa.one(inv._links.conversation)
  return c and c.href
end

function agent.im.decline(x)
  local what = "agent.im.decline"
  ok(ucwa.post(link(im_invitation(x, what), "decline", what, " (only a waiting incoming invitation can be declined)")), what)
end

-- Sends `text` in a connected conversation (`sendMessage`, the text as text/plain).
function agent.im.reply(x, text)
  local what = "agent.im.reply"
  text_of(what, text)
  local messaging = ok(ucwa.get(messaging_of(x, what)), what).body
  ok(ucwa.post(link(messaging, "sendMessage", what, " (the conversation's messaging is not connected)"), text, "text/plain; charset=utf-8"), what)
end

-- Ends the messaging of a conversation (`stopMessaging`).
function agent.im.stop(x)
  local what = "agent.im.stop"
  local messaging = ok(ucwa.get(messaging_of(x, what)), what).body
  ok(ucwa.post(link(messaging, "stopMessaging", what, " (the conversation's messaging is not connected)")), what)
end

-- A connected two-party messaging conversation with `to`, from the pool's active conversations.
local function conversation_with(comm, to)
  local l = comm and comm._links and ucwa.one(comm._links.conversations)
  if not (l and l.href) then return nil end
  local r = ucwa.get(l.href)
  if r.status ~= 200 or type(r.body) ~= "table" then return nil end
  for _, c in ipairs(ucwa.many(r.body._embedded and r.body._embedded.conversation)) do
    local messaging = false
    for _, m in ipairs(ucwa.many(c.activeModalities)) do messaging = messaging or m == "Messaging" end
    local parts = c._links and ucwa.one(c._links.participants)
    if c.state == "Connected" and messaging and (c.participantCount or 2) <= 2 and parts then
      local p = ucwa.get(parts.href)
      for _, who in ipairs(p.status == 200 and ucwa.many(p.body._embedded and p.body._embedded.participant) or {}) do
        if type(who.uri) == "string" and who.uri:lower() == to:lower() then return c end
      end
    end
  end
  return nil
end

-- Sends one instant message. In a connected conversation with `to` if the account has one
-- (`sendMessage`); else a messaging conversation started with the message in it
-- (`startMessaging`, the message as a data: link). Gives the messagingInvitation resource (nil
-- when an existing conversation was used) and the conversation's href.
function agent.im.send(to, text)
  local what = "agent.im.send"
  if type(to) ~= "string" or #to > 512 or not to:match("^sip:[^%s%c]+$") then fail(what, "expected a sip: URI to send to") end
  text_of(what, text)
  local app = ok(ucwa.get(ucwa.application()), what).body
  local comm = app._embedded and ucwa.one(app._embedded.communication)
  local existing = conversation_with(comm, to)
  if existing then
    agent.im.reply(existing, text)
    return nil, ucwa.one(existing._links.self).href
  end
  local href = link(comm, "startMessaging", what, " (the pool offers no messaging here)")
  local operation = format("%08x%08x", random(0, 0x7fffffff), random(0, 0x7fffffff))
  local inv = ok(ucwa.post(href, {
    to = to,
    operationId = operation,
    _links = { message = { href = "data:text/plain;charset=utf-8," .. percent(text) } },
  }), what).body
  local c = type(inv) == "table" and inv._links and ucwa.one(inv._links.conversation)
  return inv, c and c.href
end

agent.people = {}

-- The application's `people` (embedded, or linked).
local function people(what)
  local app = ok(ucwa.get(ucwa.application()), what).body
  local p = app._embedded and ucwa.one(app._embedded.people)
  if p then return p end
  return ok(ucwa.get(link(app, "people", what)), what).body
end

local function query_escape(text)
  return (text:gsub("[^%w%-%._~]", function(c) return format("%%%02X", byte(c)) end))
end

-- A contact as scripts get it from search.
local function person(c)
  local self = c._links and ucwa.one(c._links.self)
  return {
    uri = c.uri, name = c.name, title = c.title, department = c.department, company = c.company,
    email = ucwa.many(c.emailAddresses)[1], phone = c.workPhoneNumber, href = self and self.href,
  }
end

local function search(what, query)
  local href = link(people(what), "search", what, " (the pool offers no directory search here)")
  local r = ok(ucwa.get(href .. (href:find("?", 1, true) and "&" or "?") .. "query=" .. query_escape(query)), what).body
  local out = {}
  for _, c in ipairs(ucwa.many(type(r) == "table" and r._embedded and r._embedded.contact)) do out[#out + 1] = person(c) end
  return out
end

-- The people the directory finds for `query` (a name or an address): {uri, name, email, phone, …}.
function agent.people.search(query)
  local what = "agent.people.search"
  if type(query) ~= "string" or query:match("^%s*$") or #query > 256 then fail(what, "expected a name or an address to search for") end
  return search(what, query)
end

-- One person by SIP URI, with what the pool shows of them now: presence (availability), note
-- and location, read through the contact's links.
function agent.people.get(uri)
  local what = "agent.people.get"
  if type(uri) ~= "string" or #uri > 512 or not uri:match("^sip:[^%s%c]+@[^%s%c]+$") then fail(what, "expected a sip: URI such as \"sip:ann@contoso.com\"") end
  local found
  for _, p in ipairs(search(what, uri:sub(5))) do
    if type(p.uri) == "string" and p.uri:lower() == uri:lower() then found = p end
  end
  if not (found and found.href) then fail(what, uri .. " is not in the directory") end
  local c = ok(ucwa.get(found.href), what).body
  local out = person(c)
  local function read(rel, field)
    local l = c._links and ucwa.one(c._links[rel])
    if l and l.href then return ok(ucwa.get(l.href), what).body[field] end
  end
  out.presence = read("contactPresence", "availability")
  out.note = read("contactNote", "message")
  out.location = read("contactLocation", "location")
  return out
end

-- `sip:Bob@Contoso.com` (or a list of them) → {"sip:bob@contoso.com", …}, each once; an error
-- names the first that is not a SIP URI.
local function sip_list(what, uris)
  if type(uris) == "string" then uris = { uris } end
  if type(uris) ~= "table" then fail(what, "expected a sip: URI or a list of them") end
  local out, seen = {}, {}
  for _, uri in ipairs(uris) do
    if type(uri) ~= "string" or #uri > 512 or not uri:match("^[Ss][Ii][Pp]:[^%s%c,/]+@[^%s%c,/]+$") then
      fail(what, "expected sip: URIs such as \"sip:ann@contoso.com\", got " .. tostring(uri))
    end
    local u = "sip:" .. uri:sub(5):lower()
    if not seen[u] then seen[u] = true; out[#out + 1] = u end
  end
  return out
end

local watch_mt = { __index = {}, __metatable = false }

-- Watches the presence of `uris` (one sip: URI or a list): their `contactPresence` `updated`
-- events reach `agent.on("contactPresence", …)` (`e.uri`, `e.availability`). The watches are
-- the account's, kept under the script's name: they hold across reloads, new applications and
-- restarts until unwatched. Gives a handle whose :cancel() unwatches these URIs.
function agent.people.watch(uris)
  local what = "agent.people.watch"
  local list = sip_list(what, uris)
  if #list == 0 then fail(what, "expected at least one sip: URI") end
  local err = native.watch(list)
  if err then fail(what, err) end
  return setmetatable({ uris = list }, watch_mt)
end

function watch_mt.__index.cancel(self)
  local err = native.unwatch(self.uris)
  if err then fail("watch:cancel", err) end
end

-- Stops watching `uris` (nil: every contact this script watches).
function agent.people.unwatch(uris)
  local what = "agent.people.unwatch"
  local err = native.unwatch(uris ~= nil and sip_list(what, uris) or nil)
  if err then fail(what, err) end
end

-- The contacts this script watches, sorted.
function agent.people.watching()
  return native.watching()
end

-- `e.text`, `e.from` and `e.direction` of `message` and `messagingInvitation` events, read on
-- demand (script::interop calls this for those names): from the embedded resource, or fetched.
local function event_field(e, name)
  local what = "e." .. name
  if e.rel == "contactPresence" then
    local href = e.href
    if name == "availability" then
      local r = e.resource or ok(ucwa.get(href), what).body
      return type(r) == "table" and r.availability or nil
    end
    if name ~= "uri" or type(href) ~= "string" then return nil end
    -- `people/<address>/presence`; else the contact the presence belongs to.
    local contact = href:match("^(.*)/[^/]+$")
    local uri = contact and uri_of_href(contact)
    if not uri and contact then
      local r = ucwa.get(contact)
      uri = r.status == 200 and type(r.body) == "table" and r.body.uri or nil
    end
    return uri
  end
  if name == "uri" or name == "availability" then return nil end
  if e.rel == "messagingInvitation" then
    local inv = e.resource or ok(ucwa.get(e.href), what).body
    if name == "text" then return data_text(inv._links and inv._links.message and ucwa.one(inv._links.message).href) end
    if name == "direction" then return inv.direction end
    local from = inv._embedded and ucwa.one(inv._embedded.from)
    return from and from.uri
  end
  local m = e.resource
  if not (m and m._links) then m = ok(ucwa.get(e.href), what).body end
  local l = m._links or {}
  if name == "direction" then return m.direction end
  if name == "text" then
    local plain, html = ucwa.one(l.plainMessage), ucwa.one(l.htmlMessage)
    return data_text(plain and plain.href) or data_text(html and html.href)
  end
  if m.direction == "Outgoing" then
    local me_uri = me(what).uri
    return me_uri
  end
  local contact, participant = ucwa.one(l.contact), ucwa.one(l.participant)
  local uri = uri_of_href(contact and contact.href) or uri_of_href(participant and participant.href)
  if not uri and participant and participant.href then
    uri = ok(ucwa.get(participant.href), what).body.uri
  end
  return uri
end

-- Answers a ringing incoming call on a phone (`acceptWithPhoneAudio`): the pool calls
-- `number` (a tel: URI) and connects the caller there.
function agent.calls.accept_on_phone(x, number)
  local what = "agent.calls.accept_on_phone"
  if type(number) ~= "string" or not number:match("^tel:%+?%d") then fail(what, "expected a tel: URI such as \"tel:+14255550100\"") end
  local href = link(invitation(x, what), "acceptWithPhoneAudio", what, " (only a ringing incoming call can be answered)")
  ok(ucwa.post(href, { phoneNumber = number }), what)
end

-- A request suspends its caller until the answer comes, and a script's top level cannot be
-- suspended: an action that sends one says so under its own name at the script's line, where
-- the agent.ucwa call inside it would name itself and this chunk. (Watches are kept, not sent.)
local sends_nothing = { watch = true, unwatch = true, watching = true }
for area, actions in pairs({ me = agent.me, calls = agent.calls, im = agent.im, people = agent.people }) do
  for name, f in pairs(actions) do
    if not sends_nothing[name] then
      local what = "agent." .. area .. "." .. name
      actions[name] = function(...)
        if not isyieldable() then
          fail(what, "only in handlers and timers, not at a script's top level (move the call into agent.on(…) or agent.after(0, …))")
        end
        return f(...)
      end
    end
  end
end

return event_field
