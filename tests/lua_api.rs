//! The `agent` API from Lua, with real HTTP: the simulator for `agent.ucwa`, a local webhook
//! receiver for `agent.http`, real files and the real database for `agent.state`.

mod common;

use common::*;
use ucwa_agent::script::ScriptOutput;

#[tokio::test]
async fn ucwa_calls_use_the_agents_session_and_stay_on_the_pool() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "reader.lua",
        r#"
agent.on("audioVideoSession", "added", function(e)
  local r = agent.ucwa.get(e.href)
  agent.log.info("session " .. r.status .. " " .. r.body.state .. " " .. r.headers["content-type"])
  local conv = agent.ucwa.get(e.conversation)
  agent.log.info("conversation " .. conv.body.state)
  local ok, err = pcall(agent.ucwa.get, "https://evil.example/ucwa/oauth/v1/applications")
  agent.log.info(tostring(ok) .. " " .. err)
  local missing = agent.ucwa.get("/ucwa/oauth/v1/applications/1/nothing")
  agent.log.info("missing " .. missing.status)
end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    sim.start_call(answered_call()).unwrap();
    let lines = agent.messages("reader", 4).await;
    assert_eq!(lines[0], "session 200 Establishing application/json; charset=utf-8");
    assert_eq!(lines[1], "conversation Connected");
    assert!(lines[2].starts_with("false ") && lines[2].contains("refused to send the session to https://evil.example"), "{}", lines[2]);
    assert_eq!(lines[3], "missing 404");
    agent.stop().await;
}

#[tokio::test]
async fn http_requests_reach_only_allowed_hosts() {
    let sim = start_sim(sim_config()).await;
    let (host, mut hooks) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hook.lua",
        &format!(
            r#"
agent.on("audioVideoInvitation", "started", function(e)
  local r = agent.http.request{{method = "POST", url = "http://{host}/notify", body = {{text = "call from " .. e.resource._embedded.from.uri}}}}
  agent.log.info("webhook " .. r.status .. " " .. r.body)
  local ok, err = pcall(agent.http.request, {{url = "http://127.0.0.2:9/x"}})
  agent.log.info(tostring(ok) .. " " .. err)
end)
"#
        ),
    );
    let extra = format!("http_allow = [\"{host}\"]");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    sim.start_call(ucwa_agent::sim::CallSpec { remote: Some("sip:ann@fabrikam.com".into()), ..answered_call() }).unwrap();
    let lines = agent.messages("hook", 2).await;
    assert_eq!(lines[0], "webhook 200 {\"ok\":true}");
    assert!(lines[1].starts_with("false ") && lines[1].contains("127.0.0.2 is not in scripts.http_allow"), "{}", lines[1]);
    let hook = tokio::time::timeout(PATIENCE, hooks.recv()).await.expect("the webhook is called").unwrap();
    assert_eq!((hook.method.as_str(), hook.path.as_str(), hook.content_type.as_str()), ("POST", "/notify", "application/json"));
    assert_eq!(hook.body, "{\"text\":\"call from sip:ann@fabrikam.com\"}");
    agent.stop().await;
}

#[tokio::test]
async fn a_hanging_http_call_is_stopped_by_the_handler_time_limit() {
    let sim = start_sim(sim_config()).await;
    let port = silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hang.lua",
        &format!(
            "agent.on('audioVideoSession', 'added', function(e) agent.http.request{{url = 'http://127.0.0.1:{port}/'}} end)\n\
             agent.on('audioVideoSession', 'updated', function(e) agent.log.info('next event runs') end)\n"
        ),
    );
    write(dir.path(), "other.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('other runs') end)\n");
    let extra = format!("http_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 300");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("other", 1).await, ["other runs"]);
    let e = agent.expect("the time limit", |o| matches!(o, ScriptOutput::HandlerError { script, .. } if script == "hang")).await;
    let ScriptOutput::HandlerError { error, .. } = e else { unreachable!() };
    // Whichever fires first, the handler's time limit or the request's (it defaults to the same).
    assert!(error.contains("time limit exceeded") || error.contains("timed out"), "{error}");
    assert_eq!(agent.messages("hang", 1).await, ["next event runs"]);
    agent.stop().await;
}

const COUNTER: &str = r#"
agent.on("audioVideoSession", "added", function(e)
  agent.state.calls = (agent.state.calls or 0) + 1
  agent.state.last = { href = e.href, tags = agent.json.array({}) }
  agent.log.info("calls " .. agent.state.calls .. " v" .. agent.script.version)
end)
"#;

#[tokio::test]
async fn state_survives_reloads_and_restarts() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "counter.lua", COUNTER);
    let config = config_text(&sim, dir.path(), "reload_debounce_ms = 20");
    let mut agent = start_agent(&sim, &config).await;
    for _ in 0..2 {
        let c = sim.start_call(answered_call()).unwrap();
        agent.messages("counter", 1).await;
        sim.end_call(c);
    }
    write(dir.path(), "counter.lua", &format!("{COUNTER}\n-- edited\n"));
    agent.expect("reload", |o| matches!(o, ScriptOutput::Loaded { version: 2, .. })).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("counter", 1).await, ["calls 3 v2"]);
    sim.end_call(c);
    agent.stop().await;

    let mut agent = start_agent(&sim, &config).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("counter", 1).await, ["calls 4 v1"]);
    sim.end_call(c);
    agent.stop().await;
    let v = saved_state(&dir.path().join(".state/agent.db"), "counter");
    let json = v.to_string();
    assert_eq!(v["calls"], 4);
    assert_eq!(v["last"]["tags"], serde_json::json!([]), "empty arrays stay arrays: {json}");
}

#[tokio::test]
async fn timers_fire_cancel_and_do_not_double_on_reload() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = |n: usize| {
        format!(
            "local ticks = 0\nlocal t\nt = agent.every(20, function()\n  ticks = ticks + 1\n  agent.log.info('v' .. agent.script.version .. ' tick' .. (agent.script.version == 1 and ' ' .. ticks or ''))\n  if ticks == 3 then t:cancel() agent.after(10, function() agent.log.info('v' .. agent.script.version .. ' done') end) end\nend)\n-- save {n}\n"
        )
    };
    write(dir.path(), "timer.lua", &script(0));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 10")).await;
    // The first tick may come before the test subscribes (the agent is still starting, 20 ms
    // after the top level ran): its line is then not seen, the rest are.
    let mut lines = agent.messages("timer", 1).await;
    while lines.last().map(String::as_str) != Some("v1 done") {
        lines.extend(agent.messages("timer", 1).await);
        assert!(lines.len() <= 4, "{lines:?}");
    }
    let seen: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(seen.len() >= 3 && ["v1 tick 1", "v1 tick 2", "v1 tick 3", "v1 done"].ends_with(&seen), "{lines:?}");
    for n in 1..=10 {
        write(dir.path(), "timer.lua", &script(n));
        let want = n as u64 + 1;
        agent.expect("reload", |o| matches!(o, ScriptOutput::Loaded { version, .. } if *version == want)).await;
    }
    // A version is announced when built; the one before may tick until the swap. From the
    // first v11 line on, only v11's timers run: a doubled timer would show another version.
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("v11 done") {
        lines.extend(agent.messages("timer", 1).await);
        assert!(lines.len() < 40, "{lines:?}");
    }
    let first = lines.iter().position(|l| l.starts_with("v11 ")).unwrap();
    assert_eq!(lines[first..], ["v11 tick", "v11 tick", "v11 tick", "v11 done"], "{lines:?}");
    agent.stop().await;
}

#[tokio::test]
async fn config_tables_and_pausing_after_repeated_failures() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "cfg.lua",
        "agent.on('audioVideoSession', 'added', function(e) agent.log.info(agent.config.greeting .. ' ' .. #agent.config.rooms) end)\n",
    );
    write(dir.path(), "flaky.lua", "agent.on('*', function(e) error('always') end)\n");
    let extra = "max_consecutive_failures = 3\nreload_debounce_ms = 20\n[scripts.config.cfg]\ngreeting = \"hello\"\nrooms = [\"a\", \"b\"]";
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), extra)).await;
    // signedIn and makeMeAvailable's events fail three times in a row.
    agent.expect("pause", |o| matches!(o, ScriptOutput::Paused { script, failures: 3 } if script == "flaky")).await;
    // From now on flaky is not called: the call's events reach it before its fixed version
    // (same inbox, in order), and give no error.
    let mut flaky = agent.out.resubscribe();
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("cfg", 1).await, ["hello 2"]);
    sim.end_call(c);
    write(dir.path(), "flaky.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('fixed') end)\n");
    agent.expect("reload", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "flaky")).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("flaky", 1).await, ["fixed"]);
    let o = expect(
        &mut flaky,
        "flaky's first line after the pause",
        |o| matches!(o, ScriptOutput::Log { script, .. } | ScriptOutput::HandlerError { script, .. } if script == "flaky"),
    )
    .await;
    assert!(matches!(o, ScriptOutput::Log { .. }), "a paused script was called: {o:?}");
    agent.stop().await;
}

#[tokio::test]
async fn a_slow_script_never_delays_polling_or_other_scripts() {
    let sim = start_sim(sim_config()).await;
    let port = silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    // Stuck for good on its first event (the limit is far away).
    write(
        dir.path(),
        "slow.lua",
        &format!("agent.on('audioVideoSession', 'added', function(e) agent.log.info('waiting') agent.http.request{{url = 'http://127.0.0.1:{port}/'}} end)\n"),
    );
    write(dir.path(), "fast.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('added ' .. e.seq) end)\n");
    let extra = format!("http_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 60000");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    let mut slow = agent.out.resubscribe();
    let polls_before = sim.counters()["polls"].as_u64().unwrap();
    for i in 0..3 {
        let c = sim.start_call(answered_call()).unwrap();
        assert!(agent.messages("fast", 1).await[0].starts_with("added "));
        if i == 0 {
            // The slow script is in its handler, waiting, from the first call on.
            assert_eq!(messages_of(&mut slow, "slow", 1).await, ["waiting"]);
        }
        sim.end_call(c);
        wait_available(&sim).await;
    }
    assert!(sim.counters()["polls"].as_u64().unwrap() >= polls_before + 3, "the channel kept polling");
    agent.stop().await;
}

#[tokio::test]
async fn at_shutdown_scripts_get_signed_out_while_the_application_still_exists() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bye.lua",
        "agent.on('agent', 'signedIn', function(e) agent.state.app = e.resource.application end)\n\
         agent.on('agent', 'signedOut', function(e) agent.log.info('bye ' .. agent.ucwa.get(agent.state.app).status) end)\n",
    );
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let mut out = agent.out.resubscribe();
    agent.stop().await;
    let bye = expect(&mut out, "bye", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "bye")).await;
    assert!(matches!(bye, ScriptOutput::Log { ref message, .. } if message == "bye 200"), "{bye:?}");
    assert_eq!(sim.counters()["applications_deleted"], 1, "deleted after the scripts finished");
}

#[tokio::test]
async fn a_request_timeout_shorter_than_the_handler_limit_applies() {
    let sim = start_sim(sim_config()).await;
    let port = silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hook.lua",
        &format!("agent.on('audioVideoSession', 'added', function(e) local ok, err = pcall(agent.http.request, {{url = 'http://127.0.0.1:{port}/', timeout = 200}}) agent.log.info(err) end)\n"),
    );
    let extra = format!("http_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 60000");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    sim.start_call(answered_call()).unwrap();
    let line = agent.messages("hook", 1).await.remove(0);
    assert!(line.contains("agent.http.request") && line.contains("timed out"), "the request's own timeout, not the handler's 60 s: {line}");
    agent.stop().await;
}

/// Follows the links a pool hands out, by name, from a script, and logs what came back.
const LINK_FOLLOWER: &str = r#"
local function get(href) local r = agent.ucwa.get(href) return r.status, r.body, r.headers end
local function show(what, status, value) agent.log.info(what .. " " .. status .. " " .. tostring(value)) end
agent.on("audioVideoInvitation", "started", function(e)
  local inv = e.resource
  local _, a = get(e.href:match("^(.-)/communication/"))
  local links, me = a._links, agent.ucwa.one(a._embedded.me)._links
  local s, b = get(links.policies.href) show("policies", s, b.telephonyMode)
  s, b = get(me.presence.href) show("presence", s, b.availability)
  s, b = get(me.note.href) show("note", s, b.type)
  s, b = get(me.location.href) show("location", s, b.rel)
  s, b = get(me.phones.href) show("phones", s, agent.ucwa.many(b._embedded.phone)[1].number:match("^tel:") ~= nil)
  s, b = get(me.callForwardingSettings.href) show("callForwardingSettings", s, b.activeSetting)
  local ps, _, ph = get(me.photo.href) show("photo", ps, ph["content-type"])
  local people = a._embedded.people._links
  s, b = get(people.myContacts.href) show("myContacts", s, b.rel)
  s, b = get(people.search.href .. "?query=demo") show("search", s, b._embedded.contact[1].uri)
  local meetings = a._embedded.onlineMeetings._links
  s, b = get(meetings.myOnlineMeetings.href) show("myOnlineMeetings", s, b.rel)
  s, b = get(a._embedded.communication._links.conversations.href) show("conversations", s, #b._embedded.conversation)
  s, b = get(inv._links.from.href) show("from", s, b.uri)
  s, b = get(inv._links.to.href) show("to", s, b.uri)
  local _, conv = get(inv._links.conversation.href)
  s, b = get(conv._links.participants.href) show("participants", s, #b._embedded.participant)
  s, b = get(conv._links.localParticipant.href) show("localParticipant", s, b.uri)
  s, b = get(conv._links.messaging.href) show("messaging", s, b.state)
  local _, av = get(inv._links.audioVideo.href)
  s, b = get(av._links.audioVideoPolicies.href) show("audioVideoPolicies", s, b.rel)
end)
"#;

#[tokio::test]
async fn a_script_can_follow_every_link_the_pool_hands_out() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "links.lua", LINK_FOLLOWER);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    sim.start_call(ucwa_agent::sim::CallSpec { remote: Some("sip:zoe@fabrikam.com".into()), ..answered_call() }).unwrap();
    let got = agent.messages("links", 17).await;
    let want = [
        "policies 200 AudioVideo",
        "presence 200 Online",
        "note 200 Personal",
        "location 200 location",
        "phones 200 true",
        "callForwardingSettings 200 Off",
        "photo 200 image/png",
        "myContacts 200 myContacts",
        "search 200 sip:demo@contoso.com",
        "myOnlineMeetings 200 myOnlineMeetings",
        "conversations 200 1",
        "from 200 sip:zoe@fabrikam.com",
        "to 200 sip:demo@contoso.com",
        "participants 200 2",
        "localParticipant 200 sip:demo@contoso.com",
        "messaging 200 Disconnected",
        "audioVideoPolicies 200 audioVideoPolicies",
    ];
    assert_eq!(got, want);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_share_modules_and_a_saved_module_reloads_its_users() {
    use ucwa_agent::script::ScriptOutput;
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib/util")).unwrap();
    let module = |word: &str| format!("local M = {{}}\nfunction M.word() return \"{word}\" end\nreturn M\n");
    std::fs::write(dir.path().join("lib/words.lua"), module("one")).unwrap();
    std::fs::write(dir.path().join("lib/util/twice.lua"), "return function(s) return s .. s end\n").unwrap();
    write(
        dir.path(),
        "user.lua",
        "local words = require('words')\nlocal twice = require('util.twice')\nassert(require('words') == words, 'one instance')\nagent.on('audioVideoSession', 'added', function(e) agent.log.info(twice(words.word())) end)\n",
    );
    write(dir.path(), "other.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('other') end)\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 20")).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("user", 1).await, ["oneone"]);
    sim.end_call(c);
    // Saving the module reloads the script that requires it.
    // (Saved as editors do: a new file renamed over the old, so no reader sees it half written.)
    let save = |text: &str| {
        std::fs::write(dir.path().join("lib/.words.tmp"), text).unwrap();
        std::fs::rename(dir.path().join("lib/.words.tmp"), dir.path().join("lib/words.lua")).unwrap();
    };
    save(&module("two"));
    agent.expect("user version 2", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "user")).await;
    // A broken module: the script keeps its running version; the error names the module's line.
    save("local M = {}\nthis is not lua\n");
    let failed = agent.expect("user's reload failing", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "user")).await;
    let ScriptOutput::LoadFailed { error, .. } = failed else { unreachable!() };
    assert!(error.contains("lib/words.lua:2:"), "{error}");
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("user", 1).await, ["twotwo"]);
    sim.end_call(c);
    // A new script that needs the broken module does not load; fixing the module loads it.
    write(
        dir.path(),
        "late.lua",
        "local words = require('words')\nagent.on('audioVideoSession', 'added', function(e) agent.log.info('late ' .. words.word()) end)\n",
    );
    agent.expect("late failing", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "late")).await;
    save(&module("three"));
    agent.expect("late loaded once its module is fixed", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "late")).await;
    agent.stop().await;
}

/// Acts on calls and on the account through agent.me / agent.calls.
const ACTOR: &str = r#"
agent.on("audioVideoInvitation", "started", function(e)
  if e.resource.subject == "decline me" then agent.calls.decline(e, "Local") end
end)
agent.on("audioVideoInvitation", "completed", function(e)
  agent.log.info("invitation " .. e.status .. " " .. tostring(e.reason and e.reason.subcode))
  local ok, err = pcall(agent.calls.decline, e)
  agent.log.info("decline again: " .. tostring(err):match("no `decline` link") )
end)
agent.on("audioVideoSession", "added", function(e)
  agent.me.set_presence("Busy")
  agent.me.set_note("In a call")
  agent.log.info("now " .. agent.me.presence() .. ", " .. agent.me.note())
end)
agent.on("audioVideoSession", "updated", function(e)
  if e.resource and e.resource.state == "Established" then agent.calls.hangup(e) end
end)
agent.on("audioVideoSession", "deleted", function(e)
  agent.me.set_presence("Online")
  agent.me.set_note("")
  agent.log.info("hung up, back to " .. agent.me.presence())
end)
agent.on("presence", "updated", function(e) agent.log.info("presence updated") end)
"#;

#[tokio::test]
async fn scripts_act_on_calls_and_on_the_account_and_the_pool_sees_it() {
    use ucwa_agent::sim::{CallOutcome, CallSpec};
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "actor.lua", ACTOR);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let presence = || async { reqwest::get(format!("{}/sim/v1/presence", sim.origin())).await.unwrap().json::<serde_json::Value>().await.unwrap() };

    // Declined by the script: the pool ends the invitation with Failure/Declined.
    sim.start_call(CallSpec { outcome: CallOutcome::WaitForAccept, subject: Some("decline me".into()), ..CallSpec::default() }).unwrap();
    assert_eq!(agent.messages("actor", 2).await, ["invitation Failure Declined", "decline again: no `decline` link"]);

    // Answered elsewhere: the script sets presence and note, then hangs up; the pool saw both.
    sim.start_call(answered_call()).unwrap();
    let got = agent.messages("actor", 6).await;
    assert_eq!(got[..2], ["invitation Success nil", "decline again: no `decline` link"]);
    let mut rest = got[2..].to_vec();
    rest.sort();
    assert_eq!(rest, ["hung up, back to Online", "now Busy, In a call", "presence updated", "presence updated"], "{got:?}");
    let p = presence().await;
    assert_eq!((&p["demo@contoso.com"]["availability"], &p["demo@contoso.com"]["note"]), (&serde_json::json!("Online"), &serde_json::json!("")), "{p}");
    assert_eq!(sim.counters()["calls_ended"], 2, "{}", sim.counters());
    agent.stop().await;
}

#[tokio::test]
async fn a_script_starts_a_call_and_cancels_it_while_it_rings() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "caller.lua",
        r#"agent.on("agent", "signedIn", function(e)
  local inv = agent.calls.start{ to = "sip:zoe@fabrikam.com", subject = "from a script" }
  agent.log.info("calling " .. inv.direction .. " " .. inv.subject)
  local refused = 0
  for _, to in ipairs({"zoe", "http://evil.example/x", "javascript:alert(1)", "sip:zoe@fabrikam.com\r\nX-Evil: 1", "sip:" .. string.rep("a", 600) .. "@x"}) do
    local ok, err = pcall(agent.calls.start, { to = to })
    if not ok and tostring(err):match("expected {to") then refused = refused + 1 end
  end
  agent.log.info(refused == 5 and "refused a bad target" or ("refused " .. refused))
end)
agent.on("audioVideoInvitation", "started", function(e)
  if e.resource.direction == "Outgoing" then agent.calls.cancel(e) end
end)
agent.on("audioVideoInvitation", "completed", function(e) agent.log.info("ended " .. e.status .. " " .. tostring(e.reason and e.reason.subcode)) end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    assert_eq!(agent.messages("caller", 3).await, ["calling Outgoing from a script", "refused a bad target", "ended Failure Canceled"]);
    let calls: serde_json::Value = reqwest::get(format!("{}/sim/v1/counters", sim.origin())).await.unwrap().json().await.unwrap();
    assert_eq!((calls["calls_started"].as_u64(), calls["calls_ended"].as_u64()), (Some(1), Some(1)), "{calls}");
    agent.stop().await;
}

#[tokio::test]
async fn the_office_hours_example_declines_a_call_outside_hours_on_the_pool() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/office_hours.lua"), dir.path().join("office_hours.lua")).unwrap();
    // No office day at all: whenever this runs, it is outside office hours.
    let extra = "[scripts.config.office_hours]\nweek = []\nzone = \"UTC\"";
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), extra)).await;
    sim.start_call(ucwa_agent::sim::CallSpec {
        outcome: ucwa_agent::sim::CallOutcome::WaitForAccept,
        remote: Some("sip:late@fabrikam.com".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(agent.messages("office_hours", 1).await, ["declined outside office hours"]);
    eventually("the pool ended the call", || sim.counters()["calls_ended"] == 1).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_script_forwards_calls_and_the_pool_stops_ringing_the_account() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "forwarder.lua",
        r#"agent.on("agent", "signedIn", function(e)
  agent.me.set_forwarding{ simultaneous_ring = "tel:+14255550100" }
  local f = agent.me.forwarding()
  agent.log.info(f.setting .. " " .. f.target)
  agent.me.set_forwarding{ immediate = "voicemail" }
  f = agent.me.forwarding()
  agent.log.info(f.setting .. " " .. f.target)
  local ok, err = pcall(agent.me.set_forwarding, { immediate = "bob" })
  agent.log.info(tostring(err):match("HTTP 400") and "the pool refused a bad target" or tostring(err))
end)
agent.on("callForwardingSettings", "updated", function(e) agent.log.info("forwarding updated") end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let mut got = agent.messages("forwarder", 5).await;
    got.sort();
    assert_eq!(
        got,
        ["ImmediateForward voicemail", "SimultaneousRing tel:+14255550100", "forwarding updated", "forwarding updated", "the pool refused a bad target"]
    );
    // Forwarded at once: the pool no longer rings the account, and says so.
    let e = sim.start_call(answered_call()).unwrap_err();
    assert!(e.contains("forwards every call to voicemail"), "{e}");
    let p: serde_json::Value = reqwest::get(format!("{}/sim/v1/presence", sim.origin())).await.unwrap().json().await.unwrap();
    assert_eq!(p["demo@contoso.com"]["forwarding"], serde_json::json!({"setting": "ImmediateForward", "target": "voicemail"}));
    assert_eq!(sim.counters()["calls_forwarded"], 1);
    agent.stop().await;
}

#[tokio::test]
async fn the_vip_example_answers_a_vip_call_on_the_mobile_on_the_pool() {
    use ucwa_agent::sim::{CallOutcome, CallSpec};
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/vip_to_mobile.lua"), dir.path().join("vip_to_mobile.lua")).unwrap();
    write(dir.path(), "sessions.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('connected') end)\n");
    let extra = "[scripts.config.vip_to_mobile]\nvips = [\"sip:ceo@contoso.com\"]\nmobile = \"tel:+14255550100\"";
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), extra)).await;
    // Its own receiver: the session can be added before the VIP script logs its line.
    let mut sessions = agent.out.resubscribe();
    let id = sim.start_call(CallSpec { outcome: CallOutcome::WaitForAccept, remote: Some("sip:ceo@contoso.com".into()), ..Default::default() }).unwrap();
    assert_eq!(agent.messages("vip_to_mobile", 1).await, ["VIP call answered on the mobile"]);
    assert_eq!(messages_of(&mut sessions, "sessions", 1).await, ["connected"], "the pool connected the call");
    let calls: serde_json::Value = reqwest::get(format!("{}/sim/v1/calls", sim.origin())).await.unwrap().json().await.unwrap();
    let call = calls.as_array().unwrap().iter().find(|c| c["id"] == id).expect("the call is up");
    assert_eq!(call["answered_on"], "tel:+14255550100", "{calls}");
    agent.stop().await;
}

/// The handlers of one event get one table (what the first sets, the next sees; an error in
/// between changes nothing), and the next event a new one.
#[tokio::test]
async fn the_handlers_of_an_event_share_its_table_and_the_next_event_gets_a_new_one() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "share.lua",
        r#"
agent.on("audioVideoSession", function(e)
  agent.log.info(e.type .. " first sees mark " .. tostring(rawget(e, "mark")))
  e.mark = e.type
end)
agent.on("audioVideoSession", function(e) error("second fails") end)
agent.on("audioVideoSession", function(e)
  agent.log.info(e.type .. " third sees mark " .. tostring(e.mark) .. ", href " .. tostring(e.href ~= nil))
end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    sim.start_call(answered_call()).unwrap();
    // (The second handler's errors come between the lines.)
    let (mut lines, mut errors) = (Vec::new(), Vec::new());
    while lines.len() < 4 {
        let what = |o: &ScriptOutput| matches!(o, ScriptOutput::Log { script, .. } | ScriptOutput::HandlerError { script, .. } if script == "share");
        match agent.expect("share's lines", what).await {
            ScriptOutput::Log { message, .. } => lines.push(message),
            ScriptOutput::HandlerError { error, .. } => errors.push(error),
            _ => unreachable!(),
        }
    }
    // The failing handler's frame reads as before the handlers were called through a Lua function.
    assert!(errors[0].starts_with("share.lua:6: second fails\n") && errors[0].contains("\tshare.lua:6: in function <share.lua:6>"), "{}", errors[0]);
    assert_eq!(
        lines,
        ["added first sees mark nil", "added third sees mark added, href true", "updated first sees mark nil", "updated third sees mark updated, href true"]
    );
    agent.stop().await;
}
