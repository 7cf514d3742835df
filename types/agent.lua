---@meta
-- LuaLS type definitions for ucwa-agent scripts (editors pick them up through .luarc.json).
-- Keep in step with docs/SCRIPTING.md ("The `agent` API") and src/script/api*.rs.

---@class AgentSender
---@field rel string   sender rel: "communication", "conversation", "me", …
---@field href string  the sender's href, absolute

---@class AgentEvent
---@field rel string            link.rel: "audioVideoSession", "audioVideoInvitation", …, or "agent"
---@field type string           "added"|"updated"|"deleted"|"started"|"completed" (agent: "signedIn"|"signedOut"|"resync")
---@field href string           the resource's href, absolute
---@field title string|nil      link.title, when sent
---@field sender AgentSender
---@field conversation string|nil  the enclosing conversation's href
---@field status string|nil     "Success"|"Failure" on completed operations
---@field reason table|nil      {code, subcode, message} of a failed operation
---@field resource table|nil    the embedded resource, when sent
---@field seq integer           delivery number, increasing in channel order
---@field raw table             the event exactly as received
---@field text string|nil       message/messagingInvitation events: the message's text (decoded; fetched if not embedded)
---@field from string|nil       message/messagingInvitation events: the sender's sip: URI
---@field direction string|nil  message/messagingInvitation events: "Incoming"|"Outgoing"
---@field uri string|nil        contactPresence events: the watched contact's sip: URI
---@field availability string|nil contactPresence events: their availability now (fetched when first read)

---@class AgentHandle
---@field id integer
---@field rel string
---@field type string|nil
local AgentHandle = {}
---Stops this subscription. Returns whether it was active.
---@return boolean
function AgentHandle:off() end

---@class AgentTimer
---@field id integer
local AgentTimer = {}
---Cancels the timer. Returns whether it was pending.
---@return boolean
function AgentTimer:cancel() end

---A time zone (agent.time.zone): local dates and instants.
---@class AgentZone
---@field name string   IANA name, e.g. "Europe/Berlin"
local AgentZone = {}
---The os.date("*t") table (year, month, day, hour, min, sec, wday, yday, isdst) plus offset
---(seconds east of UTC), for agent.now() or for ms since the epoch.
---@param ms number|nil
---@return {year: integer, month: integer, day: integer, hour: integer, min: integer, sec: integer, wday: integer, yday: integer, isdst: boolean, offset: integer}
function AgentZone:date(ms) end
---Milliseconds since the epoch of a wall-clock time in this zone (fields as os.time: hour
---defaults to 12). A skipped time (spring forward) gives the instant after the gap; a repeated
---time (fall back) the earlier instant.
---@param t {year: integer, month: integer, day: integer, hour: integer|nil, min: integer|nil, sec: integer|nil}
---@return integer
function AgentZone:time(t) end

---Business hours for agent.time.open.
---@class AgentHours
---@field zone string|AgentZone|nil   default: scripts.time_zone
---@field week string[]|string|nil   "MON-FRI 08:30-17:30" entries
---@field closed string[]|nil         "YYYY-MM-DD" dates closed all day
---@field calendar string[]|string|nil names from [scripts.calendars] (iCalendar holiday files)

---@class AgentTime
local AgentTime = {}
---Whether the hours are open now (or at epoch ms `at`), and when that next changes (nil: not
---within a year).
---@param hours AgentHours
---@param at number|nil
---@return boolean open
---@return integer|nil change
function AgentTime.open(hours, at) end
---A time zone by IANA name; no name: [scripts] time_zone (default: the system's, else UTC).
---Raises an error naming an unknown zone.
---@param name string|AgentZone|nil
---@return AgentZone
function AgentTime.zone(name) end

---A scheduled job (agent.cron, agent.at).
---@class AgentJob
---@field id integer
local AgentJob = {}
---Cancels the job. Returns whether it was scheduled.
---@return boolean
function AgentJob:cancel() end
---Epoch ms of the next run.
---@return integer|nil
function AgentJob:next() end

---@class AgentScheduleOptions
---@field zone string|AgentZone|nil  default: scripts.time_zone
---@field catch_up boolean|nil        run once at start if a run was missed while the agent was down
---@field name string|nil             the agent.state._cron key of a catch_up job
---@field days string[]|nil           agent.at only: {"MON-FRI"}, {"SAT", "SUN"}; default every day

---@class AgentReply
---@field status integer
---@field body any       decoded JSON (agent.ucwa) or the body text (agent.http)
---@field headers table<string, string>

---@class AgentMe
local AgentMe = {}
---@return string availability
function AgentMe.presence() end
---@param availability "Online"|"Busy"|"DoNotDisturb"|"BeRightBack"|"Away"|"Offwork"
function AgentMe.set_presence(availability) end
---@return string message
function AgentMe.note() end
---@param text string
function AgentMe.set_note(text) end
---@return {setting: "Off"|"ImmediateForward"|"SimultaneousRing", target: string|nil}
function AgentMe.forwarding() end
---@param spec {immediate: string|nil, simultaneous_ring: string|nil}
function AgentMe.set_forwarding(spec) end

---@class AgentCalls
local AgentCalls = {}
---Declines a ringing incoming call (its audioVideoInvitation event or resource).
---@param invitation table
---@param reason string|nil
function AgentCalls.decline(invitation, reason) end
---Answers a ringing incoming call on a phone (acceptWithPhoneAudio): the pool rings `number`.
---@param invitation table
---@param number string a tel: URI
function AgentCalls.accept_on_phone(invitation, number) end
---Cancels a ringing outgoing call.
---@param invitation table
function AgentCalls.cancel(invitation) end
---Starts an audio/video call (the application's startAudioVideo); gives the invitation resource.
---@param spec {to: string, subject: string|nil}
---@return table
function AgentCalls.start(spec) end
---Hangs up a connected call: a conversation href, or an event of the call.
---@param call string|table
function AgentCalls.hangup(call) end

---@class AgentIm
local AgentIm = {}
---Sends an instant message: in the connected conversation the account has with `to`, else in a new
---one (startMessaging). Gives the messagingInvitation resource (nil when an existing conversation
---was used) and the conversation's href.
---@param to string a sip: URI
---@param text string
---@return table|nil invitation
---@return string|nil conversation
function AgentIm.send(to, text) end
---Accepts an incoming IM (its messagingInvitation event or resource); gives the conversation's href.
---@param invitation table
---@return string|nil
function AgentIm.accept(invitation) end
---Declines an incoming IM (its messagingInvitation event or resource).
---@param invitation table
function AgentIm.decline(invitation) end
---Sends `text` in a conversation (sendMessage): its href, or any event or resource of it.
---@param conversation string|table
---@param text string
function AgentIm.reply(conversation, text) end
---Ends a conversation's messaging (stopMessaging): its href, or any event or resource of it.
---@param conversation string|table
function AgentIm.stop(conversation) end

---@class AgentPerson
---@field uri string
---@field name string|nil
---@field email string|nil
---@field phone string|nil
---@field title string|nil
---@field department string|nil
---@field company string|nil
---@field href string|nil       the contact resource
---@field presence string|nil   agent.people.get only: the availability ("Online", "Busy", …, "Offline")
---@field note string|nil       agent.people.get only
---@field location string|nil   agent.people.get only

---@class AgentPeople
local AgentPeople = {}
---The people the directory finds for a name or an address.
---@param query string
---@return AgentPerson[]
function AgentPeople.search(query) end
---One person by SIP URI, with their presence, note and location now.
---@param uri string a sip: URI
---@return AgentPerson
function AgentPeople.get(uri) end
---Watches contacts' presence: changes arrive as `contactPresence` events (`e.uri`,
---`e.availability`). Kept by the account under the script's name across reloads, new
---applications and restarts (at most 200 contacts per account).
---@param uris string|string[] sip: URIs
---@return AgentWatch
function AgentPeople.watch(uris) end
---Stops this script watching `uris` (nil: everyone it watches).
---@param uris string|string[]|nil
function AgentPeople.unwatch(uris) end
---The contacts this script watches, sorted (lower case).
---@return string[]
function AgentPeople.watching() end

---@class AgentWatch
---@field uris string[] the watched URIs, in lower case
---@field cancel fun(self: AgentWatch) unwatches these URIs

---@class AgentMetricHandle
---@field inc fun(self: AgentMetricHandle, n: number|nil, labels: table<string, string|number|boolean>|nil)
---@field dec fun(self: AgentMetricHandle, n: number|nil, labels: table<string, string|number|boolean>|nil)
---@field set fun(self: AgentMetricHandle, v: number, labels: table<string, string|number|boolean>|nil)
---@field observe fun(self: AgentMetricHandle, v: number, labels: table<string, string|number|boolean>|nil)

---@class AgentMetrics
local AgentMetrics = {}
---A counter (only `inc`), exported as ucwa_script_<name>.
---@param name string
---@param help string|nil
---@return AgentMetricHandle
function AgentMetrics.counter(name, help) end
---A gauge (`inc`, `dec`, `set`).
---@param name string
---@param help string|nil
---@return AgentMetricHandle
function AgentMetrics.gauge(name, help) end
---A histogram (`observe`) with these bucket upper bounds.
---@param name string
---@param help string|nil
---@param buckets number[]
---@return AgentMetricHandle
function AgentMetrics.histogram(name, help, buckets) end

---@class AgentHttpRequest
---@field method string|nil   default "GET"
---@field url string
---@field headers table<string, string>|nil
---@field body table|string|nil  a table is sent as JSON
---@field timeout number|nil  milliseconds (default: the handler limit)

---@class AgentLog
local AgentLog = {}
---@param msg any
---@param fields table|nil
function AgentLog.debug(msg, fields) end
---@param msg any
---@param fields table|nil
function AgentLog.info(msg, fields) end
---@param msg any
---@param fields table|nil
function AgentLog.warn(msg, fields) end
---@param msg any
---@param fields table|nil
function AgentLog.error(msg, fields) end

---@class AgentUcwa
local AgentUcwa = {}
---@param href string
---@return AgentReply
function AgentUcwa.get(href) end
---@param href string
---@param body table|string|nil
---@param content_type string|nil
---@return AgentReply
function AgentUcwa.post(href, body, content_type) end
---@param href string
---@param body table|string|nil
---@param content_type string|nil
---@return AgentReply
function AgentUcwa.put(href, body, content_type) end
---@param href string
---@return AgentReply
function AgentUcwa.delete(href) end
---The value itself, or the first item if the pool sent an array (`_embedded.from` or `[from]`).
---@param value any
---@return any
function AgentUcwa.one(value) end
---Always a list: `{}` for nil, `{value}` for one object, the array itself for an array.
---@param value any
---@return any[]
function AgentUcwa.many(value) end
---The href of the agent's application (what agent.me and agent.calls start from).
---@return string
function AgentUcwa.application() end
---Milliseconds since the epoch of an ISO 8601 date or a .NET `/Date(ms)/` one; nil otherwise.
---@param text string|nil
---@return integer|nil
function AgentUcwa.date(text) end

---@class AgentHttp
local AgentHttp = {}
---@param request AgentHttpRequest
---@return AgentReply
function AgentHttp.request(request) end

---@class AgentJson
---@field null lightuserdata  JSON null, distinct from nil
local AgentJson = {}
---@param value any
---@return string
function AgentJson.encode(value) end
---@param text string
---@return any
function AgentJson.decode(text) end
---Marks a table as an array (an empty one encodes as []).
---@param t table|nil
---@return table
function AgentJson.array(t) end

---@class AgentScript
---@field name string
---@field version integer

---The account this copy of the script serves (one Lua state per script per account).
---@class AgentAccount
---@field name string `[[account]]` name; "default" for the single unnamed account
---@field uri string|nil "sip:user@domain" when the configuration names the user

---@class Agent
---@field log AgentLog
---@field ucwa AgentUcwa
---@field metrics AgentMetrics
---@field me AgentMe
---@field calls AgentCalls
---@field im AgentIm
---@field people AgentPeople
---@field http AgentHttp
---@field json AgentJson
---@field state table    kept across reloads and restarts
---@field config table   [scripts.config.<name>] from config.toml
---@field script AgentScript
---@field account AgentAccount
---@field time AgentTime
agent = {}

---Subscribes to events: agent.on(rel, fn) or agent.on(rel, type, fn); rel may be "*".
---@overload fun(rel: string, handler: fun(e: AgentEvent)): AgentHandle
---@param rel string
---@param type string
---@param handler fun(e: AgentEvent)
---@return AgentHandle
function agent.on(rel, type, handler) end

---Calls fn once after ms milliseconds.
---@param ms number
---@param fn fun()
---@return AgentTimer
function agent.after(ms, fn) end

---Calls fn every ms milliseconds (at least 10).
---@param ms number
---@param fn fun()
---@return AgentTimer
function agent.every(ms, fn) end

---Runs fn at the times of a 5-field cron expression ("30 8 * * MON-FRI") in a zone.
---@overload fun(expr: string, fn: fun()): AgentJob
---@param expr string
---@param options AgentScheduleOptions
---@param fn fun()
---@return AgentJob
function agent.cron(expr, options, fn) end

---Runs fn at a time of day ("08:30") on options.days in a zone.
---@overload fun(time: string, fn: fun()): AgentJob
---@param time string
---@param options AgentScheduleOptions
---@param fn fun()
---@return AgentJob
function agent.at(time, options, fn) end

---Runs fn before this version of the script is replaced or removed.
---@param fn fun()
function agent.on_unload(fn) end

---Milliseconds since the Unix epoch.
---@return integer
function agent.now() end

-- In *_test.lua files (ucwa-agent test):

---@class TestLog
---@field level string
---@field message string
---@field fields table|nil

---@class TestRequest
---@field via string   "ucwa" or "http"
---@field method string
---@field url string
---@field body any

---@class Test
test = {}
---`agent.config` for the scripts loaded after it (as [scripts.config.<name>] would give it).
---@param config table
function test.config(config) end

---Runs a script file (relative to the test file) in this test's state.
---@param path string
function test.load(path) end
---Builds an event; fields: href, title, resource, status, reason, sender, conversation.
---@param rel string
---@param type string
---@param fields table|nil
---@return AgentEvent
function test.event(rel, type, fields) end
---Runs the handlers that match the event; raises if one fails.
---@param event AgentEvent
function test.dispatch(event) end
---Moves the clock forward and runs the timers that fall due (stopping at each cron/at run).
---@param ms integer
function test.advance(ms) end
---Loads an iCalendar file (beside the test) as [scripts.calendars] `name` would.
---@param name string
---@param path string
function test.calendar(name, path) end
---Sets the clock to ms since the epoch; runs nothing (schedules re-arm from the new time).
---@param ms integer
function test.clock(ms) end
---A canned answer for agent.ucwa / agent.http (method and the href or URL the script uses; a UCWA
---href may be absolute, a path, or relative to the application: "me/presence").
---@param method string
---@param target string
---@param status integer
---@param body any
function test.answer(method, target, status, body) end
---The requests scripts made since the case began or the last call.
---@return TestRequest[]
function test.requests() end
---The log lines since the case began or the last call.
---@return TestLog[]
function test.logs() end
---A named test case.
---@param name string
---@param fn fun()
function test.case(name, fn) end
---Deep equality (numbers compare as Lua does).
---@param actual any
---@param expected any
---@param msg string|nil
function test.eq(actual, expected, msg) end
---@param value any
---@param msg string|nil
function test.ok(value, msg) end
---Expects fn to raise; pattern (optional) must match the error.
---@param fn fun()
---@param pattern string|nil
---@param msg string|nil
function test.fails(fn, pattern, msg) end
