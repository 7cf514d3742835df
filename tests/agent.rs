//! The agent end to end: real HTTP against the simulator, real Lua scripts, asserting what the
//! scripts observed.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use ucwa_agent::agent::{Agent, StartError};
use ucwa_agent::config::Config;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{CallOutcome, CallSpec, Fault};

/// Logs every audioVideoSession event with the fields scripts rely on.
const SESSION_LOGGER: &str = r#"
agent.on("audioVideoSession", function(e)
  assert(e.href:match("^http://127%.0%.0%.1:%d+/ucwa/oauth/v1/applications/%d+/communication/conversations/%d+/audioVideo/audioVideoSession$"), e.href)
  assert(e.sender.rel == "communication", e.sender.rel)
  assert(e.conversation and e.href:sub(1, #e.conversation) == e.conversation)
  assert(e.raw.link.rel == "audioVideoSession")
  local state = e.resource and e.resource.state or "-"
  agent.log.info(e.type .. " " .. state, { seq = e.seq })
end)
agent.on("agent", function(e) agent.log.info("agent " .. e.type) end)
"#;

#[tokio::test]
async fn an_incoming_call_runs_added_updated_deleted_in_order() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sessions.lua", SESSION_LOGGER);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let call = sim.start_call(answered_call()).unwrap();
    let first = agent.messages("sessions", 3).await;
    assert_eq!(first, ["agent signedIn", "added Establishing", "updated Established"]);
    assert!(sim.end_call(call));
    assert_eq!(agent.messages("sessions", 1).await, ["deleted -"]);
    let counters = sim.counters();
    assert!(counters["unauthorized"].as_u64().unwrap() >= 1, "signed in through the 401 challenge: {counters}");
    assert_eq!(counters["tokens_issued"], 1);
    agent.stop().await;
    assert_eq!(sim.counters()["applications_deleted"], 1, "shutdown deletes the application");
}

#[tokio::test]
async fn a_failing_script_leaves_the_others_running() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.lua", "agent.on('audioVideoSession', function(e)\n  error('boom on ' .. e.type)\nend)\n");
    write(dir.path(), "broken.lua", "agent.on('audioVideoSession', function(e)\n  this is not lua\nend)\n");
    write(dir.path(), "good.lua", "agent.on('audioVideoSession', function(e) agent.log.info(e.type) end)\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    // Scripts run in parallel: good's lines may come before or after bad's error.
    let mut good = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    let err = agent.expect("bad.lua's error", |o| matches!(o, ScriptOutput::HandlerError { script, .. } if script == "bad")).await;
    let ScriptOutput::HandlerError { error, rel, kind, .. } = err else { unreachable!() };
    assert!(error.starts_with("bad.lua:2: boom on added"), "{error}");
    assert_eq!((rel.as_str(), kind.as_str()), ("audioVideoSession", "added"));
    assert_eq!(messages_of(&mut good, "good", 2).await, ["added", "updated"]);
    sim.end_call(call);
    assert_eq!(messages_of(&mut good, "good", 1).await, ["deleted"]);
    agent.stop().await;
    // (One agent per state directory: the second starts once the first has stopped.)
    let scripts: Vec<String> = agent_scripts(&sim, dir.path()).await;
    assert_eq!(scripts, ["bad", "good"], "the script with a syntax error is not loaded");
}

async fn agent_scripts(sim: &ucwa_agent::sim::Simulator, dir: &Path) -> Vec<String> {
    std::env::set_var(PASSWORD_ENV, "demo");
    let config = Config::parse(&config_text(sim, dir, ""), Path::new("t.toml")).unwrap();
    let agent = Agent::start(config).await.unwrap();
    agent.scripts().scripts().into_iter().map(|(n, _)| n).collect()
}

/// Collects the session script's messages up to and including `want`.
async fn until(agent: &mut Running, seen: &mut Vec<String>, want: &str) {
    loop {
        let m = agent.messages("sessions", 1).await.remove(0);
        let done = m == want;
        seen.push(m);
        if done {
            return;
        }
    }
}

/// Records the `seq` of every event that is not the agent's own, in `agent.state`.
const EVERY_EVENT: &str = r#"agent.on("*", function(e)
  if e.rel ~= "agent" then
    agent.state.seqs = agent.state.seqs or {}
    table.insert(agent.state.seqs, e.seq)
  end
end)"#;

/// One row of the recovery table: with `count` faults injected, two calls go through; the
/// scripts see every event the simulator sent, once, in order, and the recovery is counted
/// under `kind`.
async fn survives(fault: Fault, count: usize, kind: Option<&str>) -> serde_json::Value {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sessions.lua", SESSION_LOGGER);
    write(dir.path(), "all.lua", EVERY_EVENT);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    assert_eq!(agent.messages("sessions", 1).await, ["agent signedIn"]);
    sim.inject(fault.clone(), count);
    let mut seen = Vec::new();
    for _ in 0..2 {
        wait_available(&sim).await;
        let call = sim.start_call(answered_call()).unwrap();
        until(&mut agent, &mut seen, "updated Established").await;
        sim.end_call(call);
        until(&mut agent, &mut seen, "deleted -").await;
    }
    let metrics = reqwest::get(format!("http://{}/metrics", agent.metrics.unwrap())).await.unwrap().text().await.unwrap();
    agent.stop().await;
    let counters = sim.counters();
    // Every event the simulator sent reached the script once, in channel order.
    let state = saved_state(&dir.path().join(".state/agent.db"), "all");
    let seqs: Vec<u64> = state["seqs"].as_array().expect("seqs recorded").iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, no repeats: {seqs:?}");
    let mut sent = counters["events"].as_u64().unwrap();
    if fault == Fault::MalformedEvent {
        // The simulator counts the broken event it sent; the agent skips it (and only it).
        sent -= count as u64;
    }
    if matches!(fault, Fault::Resync | Fault::Resume) {
        // After a resync (or resume) the channel starts over: the batch in flight comes again (as a
        // repeat), so scripts may see its events twice; none is lost.
        assert!(seqs.len() as u64 >= sent, "every event sent was seen: {seqs:?} {counters}");
    } else {
        assert_eq!(seqs.len() as u64, sent, "every event sent was seen once: {seqs:?} {counters}");
    }
    if let Some(kind) = kind {
        let prefix = format!("ucwa_recoveries_total{{kind=\"{kind}\"}} ");
        let recovered: u64 = metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap());
        assert_eq!(recovered, count as u64, "counted as {kind}: {metrics}");
    }
    // Token expiry and a vanished application apply at once; the others are queued per poll.
    let queued = !matches!(fault, Fault::TokenExpiry | Fault::ApplicationGone);
    assert_eq!(counters["faults_applied"], if queued { count as u64 } else { 0 });
    json!({"seen": seen, "counters": counters})
}

/// What the session logger sees of two answered calls.
const TWO_CALLS: [&str; 6] = ["added Establishing", "updated Established", "deleted -", "added Establishing", "updated Established", "deleted -"];

#[tokio::test]
async fn recovers_from_server_errors() {
    let r = survives(Fault::ServerError { status: 503, retry_after: Some(1) }, 2, Some("server_error")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn recovers_from_throttling() {
    let r = survives(Fault::TooManyRequests { retry_after: None }, 2, Some("throttled")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn recovers_from_dropped_connections() {
    let r = survives(Fault::DropConnection, 2, Some("transport")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn recovers_from_malformed_bodies() {
    let r = survives(Fault::MalformedBody, 2, Some("malformed_reply")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_delivers_the_others_and_moves_on() {
    let r = survives(Fault::MalformedEvent, 3, Some("malformed_event")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn an_endless_body_is_cut_off_and_the_same_ack_polled_again() {
    let r = survives(Fault::EndlessBody { gzip: false }, 1, Some("malformed_reply")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
    let r = survives(Fault::EndlessBody { gzip: true }, 1, Some("malformed_reply")).await;
    assert_eq!(r["seen"], json!(TWO_CALLS), "{r}");
}

#[tokio::test]
async fn a_resync_is_followed_and_reported_to_scripts() {
    let r = survives(Fault::Resync, 1, Some("resync")).await;
    // The resync comes where the fault was injected: before the first call's events.
    let mut want = vec!["agent resync"];
    want.extend(TWO_CALLS);
    assert_eq!(r["seen"], json!(want), "{r}");
}

#[tokio::test]
async fn a_resume_is_followed_and_reported_to_scripts_as_a_resync() {
    let r = survives(Fault::Resume, 1, Some("resume")).await;
    let mut want = vec!["agent resync"];
    want.extend(TWO_CALLS);
    assert_eq!(r["seen"], json!(want), "{r}");
    assert_eq!(r["counters"]["resumes"], 1, "{r}");
}

#[tokio::test]
async fn an_expired_token_is_renewed() {
    let r = survives(Fault::TokenExpiry, 1, None).await;
    assert!(r["counters"]["tokens_issued"].as_u64().unwrap() >= 2, "{r}");
}

#[tokio::test]
async fn a_vanished_application_is_created_again() {
    let r = survives(Fault::ApplicationGone, 1, Some("application_gone")).await;
    let seen = r["seen"].as_array().unwrap();
    let resync = seen.iter().position(|m| m == "agent resync").expect("scripts are told");
    assert_eq!(seen[resync + 1], "agent signedIn", "{r}");
    assert_eq!(r["counters"]["applications_created"], 2, "{r}");
}

#[tokio::test]
async fn hot_reload_swaps_versions_and_keeps_the_old_one_on_error() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = |v: &str| format!("agent.on('audioVideoSession', 'added', function(e) agent.log.info('{v} ' .. agent.script.version) end)\n");
    write(dir.path(), "rule.lua", &script("one"));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 20")).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["one 1"]);
    sim.end_call(c);
    // Save as editors do: write a temporary file, rename it over the script.
    write(dir.path(), ".rule.lua.swp", &script("two"));
    std::fs::rename(dir.path().join(".rule.lua.swp"), dir.path().join("rule.lua")).unwrap();
    agent.expect("version 2", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "rule")).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["two 2"]);
    sim.end_call(c);
    write(dir.path(), "rule.lua", "agent.on('audioVideoSession', function(e)\n  oops(\nend)\n");
    let failed = agent.expect("the broken save", |o| matches!(o, ScriptOutput::LoadFailed { .. })).await;
    let ScriptOutput::LoadFailed { error, .. } = failed else { unreachable!() };
    assert!(error.contains("rule.lua:3:"), "{error}");
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["two 2"], "the old version keeps running");
    sim.end_call(c);
    std::fs::remove_file(dir.path().join("rule.lua")).unwrap();
    agent.expect("unload", |o| matches!(o, ScriptOutput::Unloaded { script } if script == "rule")).await;
    agent.stop().await;
}

#[tokio::test]
async fn the_shipped_scripts_and_examples_work() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in std::fs::read_dir(root.join("examples")).unwrap().map(|e| e.unwrap().path()).chain([root.join("scripts/call_log.lua")]) {
        if f.extension().is_some_and(|e| e == "lua") {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
    }
    let (hook_host, mut hooks) = webhook_receiver().await;
    let extra = format!("http_allow = [\"{hook_host}\"]\n[scripts.config.incoming_call_webhook]\nurl = \"http://{hook_host}/hooks/calls\"");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    // Every script's output, to check at the end that none failed.
    let mut everything = agent.out.resubscribe();
    let mut stats = agent.out.resubscribe();
    let mut call_log = agent.out.resubscribe();
    let mut busy = agent.out.resubscribe();
    sim.start_call(CallSpec { outcome: CallOutcome::Missed, remote: Some("sip:zoe@fabrikam.com".into()), ring_ms: Some(10), ..CallSpec::default() }).unwrap();
    let missed = agent.expect("missed call", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "missed_calls")).await;
    let ScriptOutput::Log { message, fields, .. } = missed else { unreachable!() };
    assert_eq!(message, "missed call");
    let fields = fields.unwrap();
    assert_eq!((fields["from"].as_str(), fields["reason"].as_str(), fields["missed_total"].as_i64()), (Some("sip:zoe@fabrikam.com"), Some("Missed"), Some(1)));
    // The default script names the caller when it rings and warns about the missed call.
    assert_eq!(messages_of(&mut call_log, "call_log", 2).await, ["call ringing", "missed call"]);
    let hook = tokio::time::timeout(PATIENCE, hooks.recv()).await.expect("the webhook is called").unwrap();
    assert_eq!(hook.path, "/hooks/calls");
    assert!(hook.body.contains("Incoming call from"), "{}", hook.body);
    // Scripts run in parallel: one stream per script whose lines are awaited.
    let mut in_a_call = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut call_log, "call_log", 3).await, ["call ringing", "call started", "call changed"]);
    // (read the session through agent.ucwa: only an Established session makes it say so)
    expect(
        &mut in_a_call,
        "in_a_call: status in a call",
        |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "in_a_call" && message == "status in a call"),
    )
    .await;
    sim.end_call(call);
    let ended =
        expect(&mut call_log, "call ended", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "call_log" && message == "call ended"))
            .await;
    let ScriptOutput::Log { fields, .. } = ended else { unreachable!() };
    let fields = fields.unwrap();
    assert!(fields["with"].as_str().is_some_and(|w| w.starts_with("sip:")), "the end names who the call was with: {fields}");
    let duration = fields["duration_s"].as_f64().unwrap();
    assert!(duration > 0.0 && duration < 60.0, "the call lasted {duration} s");
    // missed_call_im: the missed caller got an IM (the pool's own record).
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let sent: Value = reqwest::get(format!("{}/sim/v1/messages", sim.origin())).await.unwrap().json().await.unwrap();
        if sent.as_array().unwrap().iter().any(|m| m["to"] == "sip:zoe@fabrikam.com" && m["from"] == "sip:demo@contoso.com") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no IM to the missed caller: {sent}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // busy_in_calls: Busy with a note during the call, then back (the pool's own record).
    assert_eq!(messages_of(&mut busy, "busy_in_calls", 2).await, ["busy", "restored"]);
    let presence: Value = reqwest::get(format!("{}/sim/v1/presence", sim.origin())).await.unwrap().json().await.unwrap();
    assert_eq!((&presence["demo@contoso.com"]["availability"], &presence["demo@contoso.com"]["note"]), (&json!("Online"), &json!("")), "{presence}");
    // call_stats: one call up, then none, one in all.
    let figures: Vec<Value> = {
        let mut v = Vec::new();
        while v.len() < 2 {
            let o = expect(&mut stats, "call_stats", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "call_stats")).await;
            if let ScriptOutput::Log { fields, .. } = o {
                v.push(fields.unwrap());
            }
        }
        v
    };
    assert_eq!((&figures[0]["active"], &figures[0]["total"]), (&json!(1), &json!(1)), "{figures:?}");
    assert_eq!((&figures[1]["active"], &figures[1]["total"]), (&json!(0), &json!(1)), "{figures:?}");
    assert!(figures[1]["longest_s"].as_f64().unwrap() > 0.0, "{figures:?}");
    agent.stop().await;
    // daily_summary counted both calls of the day in its state.
    let summary = saved_state(&dir.path().join(".state/agent.db"), "daily_summary");
    assert_eq!((&summary["calls"], &summary["missed"]), (&json!(1), &json!(1)), "{summary}");
    while let Ok(o) = everything.try_recv() {
        assert!(!matches!(o, ScriptOutput::HandlerError { .. } | ScriptOutput::LoadFailed { .. }), "a shipped script failed: {o:?}");
    }
}

#[tokio::test]
async fn a_missing_password_variable_is_named() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&sim, dir.path(), "").replace(PASSWORD_ENV, "UCWA_AGENT_TEST_UNSET_VARIABLE");
    let config = Config::parse(&text, Path::new("agent.toml")).unwrap();
    let err = Agent::start(config).await.err().expect("refused");
    assert!(matches!(err, StartError::PasswordMissing { .. }));
    let msg = err.to_string();
    assert!(msg.contains("agent.toml") && msg.contains("auth.password_env") && msg.contains("UCWA_AGENT_TEST_UNSET_VARIABLE"), "{msg}");
}

/// `run` refuses what `check` reports: a token variable that is not set, a token file that
/// cannot be read (one list of start-up checks, `Config::account_surroundings`).
#[tokio::test]
async fn a_missing_token_variable_or_file_is_named_at_start_as_check_names_it() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    for (auth, key, named) in [
        ("kind = \"bearer\"\ntoken_env = \"UCWA_AGENT_TEST_UNSET_TOKEN\"", "auth.token_env", "UCWA_AGENT_TEST_UNSET_TOKEN"),
        ("kind = \"bearer\"\ntoken_file = \"no-such-token.txt\"", "auth.token_file", "no-such-token.txt"),
    ] {
        let config = Config::parse(&config_with_auth(&sim, dir.path(), auth, ""), &dir.path().join("agent.toml")).unwrap();
        let checked: Vec<String> = config.check_surroundings().iter().map(|e| e.to_string()).collect();
        let err = Agent::start(config).await.err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains("agent.toml") && msg.contains(key) && msg.contains(named), "{msg}");
        assert_eq!(checked, [msg], "check reports what run refuses, in the same words");
    }
}
