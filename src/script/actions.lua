-- agent.me and agent.calls: acting on the account and on calls, over agent.ucwa. Every href
-- comes from a link the pool gave (the application's `me`, an invitation's `decline`, a
-- conversation's audioVideo); a resource without the link raises an error saying which.
local agent, user_level = ...
local ucwa = agent.ucwa
-- Taken now: a script that reassigns a global does not break these functions.
local type, error, tostring, pcall, ipairs = type, error, tostring, pcall, ipairs
local format, byte, random = string.format, string.byte, math.random

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

-- The invitation resource of an audioVideoInvitation event (as embedded, or fetched).
local function invitation(x, what)
  if type(x) ~= "table" then fail(what, "expected an audioVideoInvitation event or resource") end
  if x.rel == "audioVideoInvitation" and x.href and x.type then
    return x.resource or ok(ucwa.get(x.href), what).body
  end
  return x
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

-- Sends one instant message: a messaging conversation started with the message in it
-- (`startMessaging`, the message as a data: link). Gives the messagingInvitation resource.
function agent.im.send(to, text)
  local what = "agent.im.send"
  if type(to) ~= "string" or not to:match("^sip:") then fail(what, "expected a sip: URI to send to") end
  if type(text) ~= "string" or text == "" then fail(what, "expected a message text") end
  local app = ok(ucwa.get(ucwa.application()), what).body
  local comm = app._embedded and ucwa.one(app._embedded.communication)
  local href = link(comm, "startMessaging", what, " (the pool offers no messaging here)")
  local operation = format("%08x%08x", random(0, 0x7fffffff), random(0, 0x7fffffff))
  return ok(ucwa.post(href, {
    to = to,
    operationId = operation,
    _links = { message = { href = "data:text/plain;charset=utf-8," .. percent(text) } },
  }), what).body
end

-- Answers a ringing incoming call on a phone (`acceptWithPhoneAudio`): the pool calls
-- `number` (a tel: URI) and connects the caller there.
function agent.calls.accept_on_phone(x, number)
  local what = "agent.calls.accept_on_phone"
  if type(number) ~= "string" or not number:match("^tel:%+?%d") then fail(what, "expected a tel: URI such as \"tel:+14255550100\"") end
  local href = link(invitation(x, what), "acceptWithPhoneAudio", what, " (only a ringing incoming call can be answered)")
  ok(ucwa.post(href, { phoneNumber = number }), what)
end
