//! The script sandbox and its limits, through the real script host and events decoded from the
//! documentation's samples.

mod common;

use common::{expect, write};
use std::time::Duration;
use tokio::sync::broadcast;
use ucwa_agent::script::{Limits, ScriptHost, ScriptOutput};
use ucwa_agent::ucwa::{batch, Event, Origin};

/// A documentation sample as the channel would deliver it: numbered in delivery order.
fn sample_event(name: &str) -> Vec<Event> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = format!("{}/tests/fixtures/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut b = batch::parse(&std::fs::read(path).unwrap(), &origin).unwrap();
    let mut ev = b.events.remove(0);
    ev.seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    vec![ev]
}

struct Host {
    host: ScriptHost,
    out: broadcast::Receiver<ScriptOutput>,
    _dir: tempfile::TempDir,
}

async fn host(limits: Limits, scripts: &[(&str, &str)]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in scripts {
        write(dir.path(), name, text);
    }
    let host = ScriptHost::new(dir.path().to_path_buf(), limits);
    let out = host.subscribe();
    host.load_dir().await.unwrap();
    Host { host, out, _dir: dir }
}

async fn log_of(out: &mut broadcast::Receiver<ScriptOutput>, script: &str) -> String {
    let o = expect(out, script, |o| matches!(o, ScriptOutput::Log { script: s, .. } if s == script)).await;
    let ScriptOutput::Log { message, .. } = o else { unreachable!() };
    message
}

async fn error_of(out: &mut broadcast::Receiver<ScriptOutput>, script: &str) -> String {
    let o =
        expect(out, script, |o| matches!(o, ScriptOutput::HandlerError { script: s, .. } | ScriptOutput::LoadFailed { script: s, .. } if s == script)).await;
    match o {
        ScriptOutput::HandlerError { error, .. } | ScriptOutput::LoadFailed { error, .. } => error,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn dangerous_functions_are_unreachable() {
    let probe = r#"
      local function gone(v, what) assert(v == nil, what .. " is reachable") end
      gone(io, "io"); gone(debug, "debug"); gone(package, "package")
      -- `require` is the agent's own: only lib/<name>.lua, no paths, no C modules.
      for _, name in ipairs({"../probe", "/etc/passwd", "os", "a/b", "x.so"}) do
        local ok, e = pcall(require, name)
        e = tostring(e)
        assert(not ok and (e:find("a module name is") or e:find("cannot read")), name .. ": " .. e)
      end
      gone(dofile, "dofile"); gone(loadfile, "loadfile"); gone(string.dump, "string.dump")
      gone(os.execute, "os.execute"); gone(os.getenv, "os.getenv"); gone(os.remove, "os.remove"); gone(os.exit, "os.exit")
      gone(_G.io, "_G.io"); gone(("").dump, "string methods' dump")
      assert(type(os.time()) == "number" and type(os.clock()) == "number" and type(os.date()) == "string")
      local f, err = load("\27Lua\84\0")
      assert(f == nil and err:find("binary"), "binary chunks load: " .. tostring(err))
      assert(load("return 1 + 1")() == 2, "text chunks load")
      local ok, e = pcall(collectgarbage, "stop")
      assert(not ok, "collectgarbage('stop') is allowed")
      agent.log.info("sandbox holds")
    "#;
    let mut h = host(Limits::default(), &[("probe.lua", probe)]).await;
    // load_dir ran before we subscribed; reload to see the outcome.
    h.host.load_file(&h.host.dir().join("probe.lua")).await.expect("the probe loads");
    assert_eq!(log_of(&mut h.out, "probe").await, "sandbox holds");
}

#[tokio::test]
async fn binary_script_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compiled.lua"), b"\x1bLua\x54\x00\x19\x93").unwrap();
    let host = ScriptHost::new(dir.path().to_path_buf(), Limits::default());
    let failed = host.load_dir().await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].to_string().contains("compiled.lua") && failed[0].message.contains("binary"), "{}", failed[0]);
}

#[tokio::test]
async fn runaway_handlers_are_stopped_and_others_carry_on() {
    let limits = Limits { instructions: 2_000_000, memory_bytes: 8 << 20, handler_timeout: Duration::from_secs(10) };
    let looping = r#"
      agent.on("audioVideoSession", "added", function(e) while true do end end)
      agent.on("audioVideoSession", "added", function(e) agent.log.info("second handler runs") end)
      agent.on("audioVideoSession", "updated", function(e)
        while true do pcall(function() while true do end end) end
      end)
      agent.on("audioVideoSession", "deleted", function(e) agent.log.info("still alive " .. e.seq) end)
    "#;
    let bomb = r#"
      agent.on("audioVideoSession", "added", function(e) local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end end)
      agent.on("audioVideoSession", "updated", function(e) local function f(n) return f(n + 1) + 1 end f(1) end)
      agent.on("audioVideoSession", "deleted", function(e) agent.log.info("recovered") end)
    "#;
    let bystander = r#"agent.on("audioVideoSession", function(e) agent.log.info("saw " .. e.type) end)"#;
    let h = host(limits, &[("looping.lua", looping), ("bomb.lua", bomb), ("bystander.lua", bystander)]).await;
    // One receiver per script: each sees the whole stream and picks its script's lines.
    let (mut l, mut b, mut s) = (h.host.subscribe(), h.host.subscribe(), h.host.subscribe());
    for name in ["audioVideoSession-added", "audioVideoSession-updated", "audioVideoSession-deleted"] {
        h.host.dispatch(sample_event(name));
    }
    let e = error_of(&mut l, "looping").await;
    assert!(e.contains("instruction limit"), "{e}");
    assert_eq!(log_of(&mut l, "looping").await, "second handler runs");
    let e = error_of(&mut l, "looping").await;
    assert!(e.contains("instruction limit"), "pcall cannot swallow the limit: {e}");
    assert!(log_of(&mut l, "looping").await.starts_with("still alive "));

    let e = error_of(&mut b, "bomb").await;
    assert!(e.contains("memory limit"), "{e}");
    let e = error_of(&mut b, "bomb").await;
    assert!(e.contains("stack overflow") || e.contains("memory limit"), "{e}");
    assert_eq!(log_of(&mut b, "bomb").await, "recovered");

    for t in ["added", "updated", "deleted"] {
        assert_eq!(log_of(&mut s, "bystander").await, format!("saw {t}"));
    }
}

#[tokio::test]
async fn the_wall_clock_limit_stops_slow_handlers() {
    let limits = Limits { instructions: u64::MAX / 2, handler_timeout: Duration::from_millis(200), ..Limits::default() };
    let slow = r#"
      agent.on("audioVideoSession", "added", function(e) local x = 0 while true do x = x + 1 end end)
      agent.on("audioVideoSession", "deleted", function(e) agent.log.info("next event runs") end)
    "#;
    let mut h = host(limits, &[("slow.lua", slow)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    h.host.dispatch(sample_event("audioVideoSession-deleted"));
    let e = error_of(&mut h.out, "slow").await;
    assert!(e.contains("time limit"), "{e}");
    assert_eq!(log_of(&mut h.out, "slow").await, "next event runs");
}

#[tokio::test]
async fn json_null_and_empty_arrays_round_trip() {
    let script = r#"
      local t = agent.json.decode('{"a":null,"b":[],"c":{},"d":[1,2]}')
      assert(t.a == agent.json.null, "null stays distinguishable")
      assert(#t.b == 0 and #t.d == 2)
      agent.on("audioVideoSession", function(e)
        assert(e.raw.link.rel == "audioVideoSession" and e.resource == nil)
        agent.log.info(agent.json.encode(t.b) .. " " .. agent.json.encode(t.d) .. " " .. agent.json.encode({x = agent.json.null}))
      end)
    "#;
    let mut h = host(Limits::default(), &[("json.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    assert_eq!(log_of(&mut h.out, "json").await, "[] [1,2] {\"x\":null}");
}

#[tokio::test]
async fn a_string_that_is_not_utf8_encodes_as_a_string_not_a_list_of_bytes() {
    // Latin-1 text, as a legacy server's answer may hold: a webhook expects a string.
    let script = r#"
      agent.on("audioVideoSession", function(e)
        agent.log.info(agent.json.encode({name = "caf\xe9", list = {"M\xfcller"}}))
      end)
    "#;
    let mut h = host(Limits::default(), &[("latin.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    let line = log_of(&mut h.out, "latin").await;
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v, serde_json::json!({"name": "caf\u{fffd}", "list": ["M\u{fffd}ller"]}), "{line}");
}

#[tokio::test]
async fn one_many_and_date_read_either_shape() {
    let script = r#"
      local u = agent.ucwa
      local obj = agent.json.decode('{"uri":"sip:a@b.c"}')
      local arr = agent.json.decode('[{"uri":"sip:a@b.c"}]')
      agent.on("audioVideoSession", function(e)
        local out = {
          u.one(obj).uri, u.one(arr).uri, tostring(u.one(nil)), tostring(u.one(agent.json.decode('[]'))),
          #u.many(nil), #u.many(obj), #u.many(arr), u.many(obj)[1].uri,
          tostring(u.date("\\/Date(1474932024822)\\/")), tostring(u.date("/Date(1474932024822+0200)/")),
          tostring(u.date("2016-09-26T23:20:24.822Z")), tostring(u.date("soon")), tostring(u.date(42)),
        }
        agent.log.info(table.concat(out, " "))
      end)
    "#;
    let mut h = host(Limits::default(), &[("shapes.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    assert_eq!(log_of(&mut h.out, "shapes").await, "sip:a@b.c sip:a@b.c nil nil 0 1 1 sip:a@b.c 1474932024822 1474932024822 1474932024822 nil nil");
}

#[tokio::test]
async fn json_null_and_empty_arrays_in_events_stay_what_they_were() {
    let script = r#"
      agent.on("audioVideoSession", function(e)
        local r = e.resource
        assert(r.note == agent.json.null, "null in a resource is agent.json.null")
        assert(type(r.tags) == "table" and #r.tags == 0)
        agent.log.info(agent.json.encode(r.tags) .. " " .. agent.json.encode(e.raw._embedded.audioVideoSession.note))
      end)
    "#;
    let mut h = host(Limits::default(), &[("nulls.lua", script)]).await;
    let body = br#"{"_links":{"next":{"href":"/e?ack=2"}},"sender":[{"rel":"communication","href":"/c","events":[
      {"link":{"rel":"audioVideoSession","href":"/c/conversations/1/audioVideo/audioVideoSession"},"type":"updated",
       "_embedded":{"audioVideoSession":{"note":null,"tags":[]}}}]}]}"#;
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut events = batch::parse(body, &origin).unwrap().events;
    events[0].seq = 1;
    h.host.dispatch(events);
    assert_eq!(log_of(&mut h.out, "nulls").await, "[] null");
}

#[tokio::test]
async fn event_tables_show_every_field_when_iterated_encoded_or_logged() {
    // Fields beyond rel/type/seq are filled in on first read; a handler that iterates the
    // event, encodes it or logs it whole still sees all of them, `raw`, `resource` and
    // `reason` included. A missed call's `completed` invitation has every kind of field.
    let script = r#"
      agent.on("audioVideoInvitation", function(e)
        assert(rawget(e, "href") == nil and rawget(e, "resource") == nil, "filled in on first read only")
        local keys = {}
        for k in pairs(e) do keys[#keys + 1] = k end
        table.sort(keys)
        local j = agent.json.decode(agent.json.encode(e))
        agent.log.info(table.concat(keys, ","), {event = e})
        agent.log.info(j.href .. " " .. j.sender.rel .. " " .. tostring(j.conversation) .. " " .. j.resource.direction .. " " .. j.reason.subcode .. " " .. j.raw.status)
        e.note = "scripts may add their own fields"
        agent.log.info(e.note .. " " .. tostring(e.title) .. " " .. tostring(e.status))
      end)
    "#;
    let mut h = host(Limits::default(), &[("whole.lua", script)]).await;
    let conv = "/ucwa/oauth/v1/applications/1/communication/conversations/7";
    let body = format!(
        r#"{{"_links":{{"next":{{"href":"/e?ack=2"}}}},"sender":[{{"rel":"communication","href":"/ucwa/oauth/v1/applications/1/communication","events":[
      {{"link":{{"rel":"audioVideoInvitation","href":"/ucwa/oauth/v1/applications/1/communication/invitations/5","title":"Zoe"}},"type":"completed","status":"Failure",
       "reason":{{"code":"Gone","subcode":"Missed","message":"The call was missed"}},
       "_embedded":{{"audioVideoInvitation":{{"direction":"Incoming","state":"Failed","_links":{{"conversation":{{"href":"{conv}"}}}}}}}}}}]}}]}}"#
    );
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut events = batch::parse(body.as_bytes(), &origin).unwrap().events;
    events[0].seq = 1;
    h.host.dispatch(events);
    let o = expect(&mut h.out, "whole", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "whole")).await;
    let ScriptOutput::Log { message, fields, .. } = o else { unreachable!() };
    // (no `conversation`: an invitation's href is not inside one)
    assert_eq!(message, "href,raw,reason,rel,resource,sender,seq,status,title,type");
    let event = &fields.expect("fields")["event"];
    assert_eq!(event["href"], "https://pool.contoso.com/ucwa/oauth/v1/applications/1/communication/invitations/5");
    assert_eq!(event["reason"]["subcode"], "Missed");
    assert_eq!(event["resource"]["state"], "Failed");
    assert_eq!(event["raw"]["type"], "completed");
    assert_eq!(
        log_of(&mut h.out, "whole").await,
        format!("https://pool.contoso.com/ucwa/oauth/v1/applications/1/communication/invitations/5 communication nil Incoming Missed Failure")
    );
    assert_eq!(log_of(&mut h.out, "whole").await, "scripts may add their own fields Zoe Failure");
}

#[tokio::test]
async fn subscriptions_can_be_removed_and_errors_name_file_and_line() {
    let script = r#"
      local h = agent.on("audioVideoSession", function(e) agent.log.info("first " .. e.type) end)
      agent.on("audioVideoSession", "updated", function(e)
        h:off()
        agent.log.info("removed")
      end)
      agent.on("audioVideoSession", "deleted", function(e)
        local x = nil
        return x.field
      end)
    "#;
    let mut h = host(Limits::default(), &[("subs.lua", script)]).await;
    for name in ["audioVideoSession-added", "audioVideoSession-updated", "audioVideoSession-deleted"] {
        h.host.dispatch(sample_event(name));
    }
    assert_eq!(log_of(&mut h.out, "subs").await, "first added");
    assert_eq!(log_of(&mut h.out, "subs").await, "first updated");
    assert_eq!(log_of(&mut h.out, "subs").await, "removed");
    let e = error_of(&mut h.out, "subs").await;
    assert!(e.starts_with("subs.lua:9: attempt to index a nil value"), "{e}");
}

#[tokio::test]
async fn documentation_samples_and_a_captured_event_decode_for_scripts() {
    let script = r#"
      agent.on("*", function(e)
        local r = e.resource or {}
        local links = r._links or {}
        agent.log.info(table.concat({e.rel, e.type, e.href, e.sender.rel, tostring(e.conversation), tostring(r.direction), tostring(r.state),
          tostring(links.acceptWithAnswer and links.acceptWithAnswer.href:match("/acceptWithAnswer$") ~= nil),
          tostring(links.mediaOffer and links.mediaOffer.href:sub(1, 5))}, " "))
      end)
    "#;
    let mut h = host(Limits::default(), &[("samples.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideo-updated"));
    h.host.dispatch(sample_event("audioVideoInvitation-started"));
    // A real pool's event (Skype for Business Online), captured: one event, wrapped in a batch.
    let captured =
        std::fs::read_to_string(format!("{}/tests/fixtures/events/captured-audioVideoInvitation-started.ofskype.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let body = format!(
        r#"{{"_links":{{"next":{{"href":"/e?ack=2"}}}},"sender":[{{"rel":"communication","href":"/ucwa/oauth/v1/applications/10672188129/communication","events":[{}]}}]}}"#,
        captured.trim_start_matches('\u{feff}')
    );
    let origin = Origin::of(&url::Url::parse("https://webpoolbl20r04.infra.lync.com/").unwrap());
    let mut events = batch::parse(body.as_bytes(), &origin).unwrap().events;
    events[0].seq = 1_000_000;
    h.host.dispatch(events);
    // (hrefs come out absolute and normalised: the default port goes)
    let conv = "https://fe1.contoso.com/ucwa/v1/applications/192/communication/conversations/137";
    assert_eq!(log_of(&mut h.out, "samples").await, format!("audioVideo updated {conv}/audioVideo conversation {conv} nil nil nil nil"));
    assert_eq!(
        log_of(&mut h.out, "samples").await,
        "audioVideoInvitation started https://fe1.contoso.com/ucwa/v1/applications/192/communication/invitations/507 communication nil nil nil nil nil"
    );
    let line = log_of(&mut h.out, "samples").await;
    assert!(
        line.starts_with(
            "audioVideoInvitation started https://webpoolbl20r04.infra.lync.com/ucwa/oauth/v1/applications/10672188129/communication/audioVideoInvitations/"
        ),
        "{line}"
    );
    assert!(line.ends_with(" communication nil Incoming Connecting true data:"), "{line}");
}

/// agent-actions (`agent.me`, `calls`, `im`, `people`) and `agent.ucwa`/`agent.http` are
/// installed at a script's first use of them (BENCHMARKS.md, "An idle account's Lua state"):
/// what the script did to its own `agent` table and globals before that, or to the hidden
/// metatable behind them, changes nothing of what they do, and another script sees them whole.
#[tokio::test]
async fn lazily_installed_areas_cannot_be_turned_against_the_script_or_others() {
    let hostile = r#"
      local me, calls = agent.me, agent.calls
      assert(getmetatable(me) == false and getmetatable(agent.ucwa) == false, "the metatable of a table not yet filled is hidden")
      assert(getmetatable(agent) == nil, "agent itself has no metatable")
      -- Before agent-actions is installed: the script's own agent.ucwa replaced, a key of
      -- agent.calls set raw, and a global agent-actions takes reassigned.
      rawset(agent, "ucwa", { application = function() return "/evil" end, get = function() return { status = 200, body = {} } end })
      rawset(calls, "decline", "mine")
      error = nil
      -- setmetatable installs the area first (as when it came with the state): the hidden
      -- metatable itself is never replaced.
      local mine = setmetatable(agent.im, { __index = function(_, k) return "mine:" .. k end })
      assert(mine == agent.im and type(agent.im.send) == "function" and agent.im.nothing == "mine:nothing", "setmetatable on agent.im before its first use")
      assert(not pcall(setmetatable, agent.people, { __gc = print }), "a __gc metatable on a table not yet filled")
      agent.on("audioVideoSession", function(e)
        local ok, err = pcall(agent.me.presence)
        local ok2, err2 = pcall(agent.me.set_presence, 42)
        local people = {}
        for k in pairs(agent.people) do people[#people + 1] = k end
        table.sort(people)
        agent.log.info(table.concat({ tostring(ok), tostring(err):match("agent%.ucwa%.application: the agent is not signed in") or tostring(err),
          tostring(ok2), tostring(err2):match("agent%.me%.set_presence: expected an availability") or tostring(err2),
          calls.decline, type(calls.hangup), tostring(me == agent.me), tostring(getmetatable(me)), table.concat(people, ",") }, " | "))
      end)
    "#;
    let other = r#"
      agent.on("audioVideoSession", function(e)
        local ok, err = pcall(agent.ucwa.get, "/x")
        local ok2, err2 = pcall(agent.me.presence)
        agent.log.info(tostring(ok) .. " " .. tostring(err) .. " | " .. tostring(ok2) .. " " .. tostring(err2):match("agent%.ucwa%.application: the agent is not signed in"))
      end)
    "#;
    let mut h = host(Limits::default(), &[("hostile.lua", hostile), ("other.lua", other)]).await;
    let mut others = h.host.subscribe();
    h.host.dispatch(sample_event("audioVideoSession-added"));
    assert_eq!(
        log_of(&mut h.out, "hostile").await,
        "false | agent.ucwa.application: the agent is not signed in | false | agent.me.set_presence: expected an availability | mine | function | true | nil | get,search,unwatch,watch,watching"
    );
    assert_eq!(
        log_of(&mut others, "other").await,
        "false agent.ucwa.get: the agent is not signed in | false agent.ucwa.application: the agent is not signed in"
    );
}

/// Installing an area at first use is held to the script's memory limit like anything else it
/// does: out of memory, the handler stops with the limit's error; once memory is free again, the
/// next use installs it whole.
#[tokio::test]
async fn an_area_installed_at_first_use_counts_against_the_memory_limit() {
    let script = r#"
      local hold, n = nil, 0
      agent.on("audioVideoSession", function(e)
        n = n + 1
        if n == 1 then
          -- Leave about 8 KiB: agent-actions needs several times that.
          hold = string.rep("x", 4 * 1024 * 1024 - math.floor(collectgarbage("count") * 1024) - 8 * 1024)
          local _ = agent.calls.hangup
          agent.log.info("installed within the limit")
        else
          hold = nil
          collectgarbage()
          local count = 0
          for _ in pairs(agent.calls) do count = count + 1 end
          agent.log.info("agent.calls has " .. count .. " functions, hangup " .. type(agent.calls.hangup))
        end
      end)
    "#;
    let limits = Limits { memory_bytes: 4 << 20, ..Limits::default() };
    let mut h = host(limits, &[("tight.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    let e = error_of(&mut h.out, "tight").await;
    assert!(e.contains("memory limit"), "{e}");
    h.host.dispatch(sample_event("audioVideoSession-added"));
    let line = log_of(&mut h.out, "tight").await;
    assert!(line.starts_with("agent.calls has ") && line.ends_with("functions, hangup function") && !line.starts_with("agent.calls has 0 "), "{line}");
}

/// An idle script's state holds what it uses, not the whole API (BENCHMARKS.md, "An idle
/// account's Lua state"): agent-actions and `agent.ucwa` come at first use, and what building
/// the state left behind is collected after the top level. (About 49 KiB today, 108 KiB when
/// every area was installed with the state and nothing collected.)
#[tokio::test]
async fn an_idle_script_holds_only_the_api_it_used() {
    let script = r#"
      agent.on("audioVideoSession", function(e)
        local idle = collectgarbage("count")
        local _ = agent.calls.hangup
        collectgarbage()
        agent.log.info(string.format("%.0f %.0f", idle, collectgarbage("count") - idle))
      end)
    "#;
    let mut h = host(Limits::default(), &[("idle.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    let line = log_of(&mut h.out, "idle").await;
    let (idle, grown) = line.split_once(' ').map(|(a, b)| (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())).unwrap();
    assert!(idle < 64.0, "an idle script's state holds {idle} KiB");
    assert!(grown > 20.0, "agent-actions added only {grown} KiB at first use: was it installed with the state?");
}

/// `agent.ucwa` and `agent.http` are installed at first use, after the script's top level: the
/// globals their wrappers take (`coroutine.isyieldable`, `error`, `ipairs`; `coroutine.yield`,
/// which mlua's async functions take) are the ones the state was built with, not what the script
/// left in its globals (SCRIPTING.md, "The sandbox").
#[tokio::test]
async fn agent_ucwa_installed_at_first_use_takes_the_globals_as_built() {
    let script = r#"
      coroutine.yield = function() error("the script's own yield") end
      coroutine, error, ipairs = nil, nil, nil
      agent.on("audioVideoSession", function(e)
        local ok, err = pcall(agent.ucwa.get, "/x")
        local ok2, err2 = pcall(agent.http.request, { url = "https://example.com/" })
        agent.log.info(tostring(ok) .. " " .. tostring(err) .. " | " .. tostring(ok2) .. " " .. type(err2))
      end)
    "#;
    let mut h = host(Limits::default(), &[("globals.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    assert_eq!(log_of(&mut h.out, "globals").await, "false agent.ucwa.get: the agent is not signed in | false string");
}

/// What serializes a value reads it raw: an area not yet installed would encode as an empty
/// table. `agent.json.encode` and `agent.log`'s fields install what they are given first, so
/// they answer the same before and after the script's first use of the area.
#[tokio::test]
async fn an_area_not_yet_installed_encodes_as_it_does_once_installed() {
    let script = r#"
      local function text(v)
        local ok, out = pcall(agent.json.encode, v)
        return tostring(ok) .. " " .. tostring(out):match("^[^\n]*")
      end
      agent.on("audioVideoSession", function(e)
        local before = text({ calls = agent.calls, n = 1 })
        local after = text({ calls = agent.calls, n = 1 })
        agent.log.info(before .. " || " .. after)
      end)
    "#;
    let mut h = host(Limits::default(), &[("enc.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    let line = log_of(&mut h.out, "enc").await;
    let (before, after) = line.split_once(" || ").unwrap();
    assert_eq!(before, after, "{line}");
    // (agent-actions' tables hold functions, which JSON cannot carry: before this, the first
    // call encoded `{"calls":{},"n":1}` and the second failed.)
    assert_eq!(before, "false runtime error: agent.json.encode: cannot serialize <function>");
}

/// Making `agent.json.encode` and `agent.log`'s fields see the areas installed at first use
/// must not change what they do with any other value: a long list of rows that share a table
/// encodes as it always did (a walk holding a reference per entry ran out of Lua's reference
/// space at a million and failed the encode), whether or not an area is installed yet.
#[tokio::test]
async fn a_long_list_encodes_whether_or_not_an_area_is_installed_yet() {
    let script = r#"
      agent.on("audioVideoSession", function(e)
        local row, rows = {}, {}
        for i = 1, 1100000 do rows[i] = row end
        local ok, out = pcall(agent.json.encode, rows)
        local logged = pcall(agent.log.debug, "rows", { rows = rows })
        agent.log.info(tostring(ok) .. " " .. (ok and tostring(#out) or tostring(out):match("^[^\n]*")) .. " " .. tostring(logged))
      end)
    "#;
    let limits = Limits { memory_bytes: 256 << 20, ..Limits::default() };
    let mut h = host(limits, &[("rows.lua", script)]).await;
    h.host.dispatch(sample_event("audioVideoSession-added"));
    assert_eq!(log_of(&mut h.out, "rows").await, "rows", "the line with the list as its fields");
    // `[{},{},…]`: three bytes a row, and the bracket.
    assert_eq!(log_of(&mut h.out, "rows").await, "true 3300001 true");
}
