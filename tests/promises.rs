//! README promises that had no test: where a new script starts, an application dropped while
//! the agent was down, keep-alive, the embedded default, the simulator's control API over HTTP
//! with an SDP answer from a script, and SIGHUP through the real signal.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::Fault;

#[tokio::test]
async fn a_new_script_starts_at_the_head_not_with_history() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "witness.lua", r#"agent.on("audioVideoSession", function(e) agent.log.info(e.type, { seq = e.seq }) end)"#);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 20")).await;
    let call = sim.start_call(answered_call()).unwrap();
    messages_of(&mut agent.out, "witness", 2).await;
    sim.end_call(call);
    let o = expect(&mut agent.out, "deleted", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "witness" && message == "deleted")).await;
    let ScriptOutput::Log { fields, .. } = o else { unreachable!() };
    let last_old = fields.unwrap()["seq"].as_u64().unwrap();

    // A script added now gets the next events, not the journal's history.
    let mut late_out = agent.out.resubscribe();
    write(dir.path(), "late.lua", r#"agent.on("audioVideoSession", function(e) agent.log.info(e.type, { seq = e.seq }) end)"#);
    expect(&mut late_out, "late.lua loaded", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "late")).await;
    let call = sim.start_call(answered_call()).unwrap();
    let o = expect(&mut late_out, "late's first line", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "late")).await;
    let ScriptOutput::Log { message, fields, .. } = o else { unreachable!() };
    assert_eq!(message, "added", "the first event late.lua gets is the new call's");
    assert!(fields.unwrap()["seq"].as_u64().unwrap() > last_old, "nothing from before it was loaded");
    sim.end_call(call);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_dropped_while_the_agent_was_down_is_created_again_with_a_resync() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "agent_events.lua", r#"agent.on("agent", function(e) agent.state.seen = (agent.state.seen or "") .. e.type .. " " end)"#);
    let config = config_file(&sim, dir.path(), "");
    let db = dir.path().join(".state/agent.db");
    let seen = || saved_state(&db, "agent_events")["seen"].as_str().unwrap_or("").to_string();
    let mut agent = spawn_agent(&config, Stdio::null());
    wait_available(&sim).await;
    eventually("signedIn saved", || seen() == "signedIn ").await;
    // Killed (no clean stop, so the position is kept); the pool drops the application meanwhile.
    agent.kill().unwrap();
    agent.wait().unwrap();
    sim.inject(Fault::ApplicationGone, 1);
    let mut agent = spawn_agent(&config, Stdio::null());
    eventually("the resync after the restart", || seen().contains("resync")).await;
    eventually("signed in again", || seen().ends_with("signedIn ")).await;
    assert_eq!(seen(), "signedIn resync signedIn ");
    assert_eq!(sim.counters()["applications_created"], 2);
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));
}

#[tokio::test(start_paused = true)]
async fn keepalive_reports_activity_on_its_interval() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(&sim, dir.path(), "").replace("max_backoff_secs = 1\n", "max_backoff_secs = 1\nkeepalive_secs = 10\n");
    let agent = start_agent(&sim, &config).await;
    let reports = || sim.counters()["report_my_activity"].as_u64().unwrap();
    let start = reports();
    // Virtual time: 35 s pass at once.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(reports() - start, 3, "one reportMyActivity every 10 s");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_logs_generated_calls() {
    // The shipped config.toml and scripts, as `cargo run --release` runs them.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("config.toml"), dir.path().join("config.toml")).unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::copy(root.join("scripts/call_log.lua"), dir.path().join("scripts/call_log.lua")).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = agent_command(&["run"], &[("RUST_LOG", "info")]).current_dir(dir.path()).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    // The generator's first call comes within 3 s and rings for 2.
    file_contains(&log, "script: call started").await;
    // Who called, spread out as key=value, the conversation as a pool path (human lines).
    let text = std::fs::read_to_string(&log).unwrap();
    let ringing = text.lines().find(|l| l.contains("script: call ringing")).expect("the call rang first");
    assert!(ringing.contains(" with=sip:") && ringing.contains(" direction=Incoming"), "{ringing}");
    let started = text.lines().find(|l| l.contains("script: call started")).unwrap();
    assert!(started.contains(" conversation=/ucwa/") && !started.contains("http://"), "{started}");
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));
    assert!(dir.path().join("state/agent.db").exists(), "the state is kept beside the configuration");
}

/// Answers the invitation subject "answer me" with an SDP answer (after trying JSON, which the
/// pool refuses); logs the session and the invitation's end.
const ANSWERER: &str = r#"
agent.on("audioVideoInvitation", "started", function(e)
  local inv = agent.ucwa.get(e.href)
  if inv.body.subject ~= "answer me" then return end
  local accept = inv.body._links.acceptWithAnswer.href
  local as_json = agent.ucwa.post(accept, {})
  local as_sdp = agent.ucwa.post(accept, "v=0\r\ns=answer\r\n", "application/sdp")
  agent.log.info("answered " .. as_json.status .. " " .. as_sdp.status)
end)
agent.on("audioVideoInvitation", "completed", function(e)
  agent.log.info("invitation " .. e.status .. " " .. tostring(e.reason and e.reason.subcode))
end)
agent.on("audioVideoSession", function(e) agent.log.info("session " .. e.type) end)
"#;

#[tokio::test]
async fn the_control_api_over_http_and_a_script_answering_with_sdp() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "answerer.lua", ANSWERER);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let http = reqwest::Client::new();
    let control = format!("{}/sim/v1", sim.origin());

    let r = http.post(format!("{control}/calls")).json(&json!({"outcome": "wait_for_accept", "subject": "answer me", "ring_ms": 60000})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let call: Value = r.json().await.unwrap();
    assert!(call["conversation"].as_str().unwrap().contains("/communication/conversations/"), "{call}");
    assert!(call["invitation"].as_str().unwrap().contains("/communication/audioVideoInvitations/"), "{call}");
    assert_eq!(messages_of(&mut agent.out, "answerer", 3).await, ["answered 415 204", "invitation Success nil", "session added"]);
    assert_eq!(messages_of(&mut agent.out, "answerer", 1).await, ["session updated"]);
    let r = http.delete(format!("{control}/calls/{}", call["id"])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(messages_of(&mut agent.out, "answerer", 1).await, ["session deleted"]);

    // Declined through the control API: the invitation ends with Failure/Declined.
    let r = http.post(format!("{control}/calls")).json(&json!({"outcome": "wait_for_accept", "ring_ms": 60000})).send().await.unwrap();
    let call: Value = r.json().await.unwrap();
    let r = http.post(format!("{control}/calls/{}/decline", call["id"])).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(messages_of(&mut agent.out, "answerer", 1).await, ["invitation Failure Declined"]);
    let counters: Value = http.get(format!("{control}/counters")).send().await.unwrap().json().await.unwrap();
    assert_eq!((counters["calls_started"].as_u64(), counters["calls_ended"].as_u64()), (Some(2), Some(2)), "{counters}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "greet.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('word ' .. agent.config.word) end)\n");
    let text = |word: &str| config_text(&sim, dir.path(), &format!("watch = false\n[scripts.config.greet]\nword = \"{word}\""));
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text("one")).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    let c = sim.start_call(answered_call()).unwrap();
    file_contains(&log, "script: word one").await;
    sim.end_call(c);
    std::fs::write(&config, text("two")).unwrap();
    signal(&agent, "-HUP");
    file_contains(&log, "SIGHUP: reloading the configuration").await;
    eventually("version 2 of greet", || std::fs::read_to_string(&log).unwrap_or_default().contains("version=2")).await;
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    file_contains(&log, "script: word two").await;
    let restart_warnings = || std::fs::read_to_string(&log).unwrap_or_default().matches("takes effect after a restart").count();
    assert_eq!(restart_warnings(), 0, "only [scripts] changed");
    let reloads = || std::fs::read_to_string(&log).unwrap_or_default().matches("configuration reloaded").count();
    // Live too: the /metrics listener (started here) and log.level (RUST_LOG is not set).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(&config, format!("{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"debug\"\n", text("two"))).unwrap();
    signal(&agent, "-HUP");
    eventually("the second reload", || reloads() == 2).await;
    assert_eq!(restart_warnings(), 0, "metrics.listen and log.level apply live");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.expect("the endpoint listens after the reload");
    assert_eq!(health.status(), 200);
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    file_contains(&log, "DEBUG ucwa_agent::agent::sink: event").await;
    // A key a reload cannot apply is named, compared with what runs, not with the file as
    // last read: setting it back to the running value warns no more.
    let live = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n[log]\nlevel = \"debug\"\n");
    std::fs::write(&config, format!("{}{live}", text("two").replace("max_backoff_secs = 1\n", "max_backoff_secs = 2\n"))).unwrap();
    signal(&agent, "-HUP");
    eventually("the third reload", || reloads() == 3).await;
    assert_eq!(restart_warnings(), 1);
    file_contains(&log, "key=server").await;
    std::fs::write(&config, format!("{}{live}", text("two"))).unwrap();
    signal(&agent, "-HUP");
    eventually("the fourth reload", || reloads() == 4).await;
    assert_eq!(restart_warnings(), 1, "back to the running value: no warning");
    // `scripts.dir` is not applied by a reload: it warns at every reload while it differs.
    let moved = text("two").replacen(&format!("dir = \"{}\"", dir.path().display()), "dir = \"/elsewhere\"", 1);
    assert_ne!(moved, text("two"));
    std::fs::write(&config, format!("{moved}{live}")).unwrap();
    for n in [5, 6] {
        signal(&agent, "-HUP");
        eventually("another reload", || reloads() == n).await;
    }
    assert_eq!(restart_warnings(), 3, "scripts.dir differs at both reloads");
    std::fs::write(&config, format!("{}{live}", text("two"))).unwrap();
    signal(&agent, "-HUP");
    eventually("the last reload", || reloads() == 7).await;
    assert_eq!(restart_warnings(), 3, "back to the running directory: no warning");
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));
}

#[tokio::test]
async fn the_application_is_created_as_configured() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(&sim, dir.path(), "").replace(
        "max_backoff_secs = 1\n",
        "max_backoff_secs = 1\nuser_agent = \"contoso-bot/2\"\nendpoint_id = \"desk-7\"\nmodalities = [\"Audio\"]\npoll_timeout_secs = 240\n",
    );
    let agent = start_agent(&sim, &config).await;
    let apps: Value = reqwest::get(format!("{}/sim/v1/applications", sim.origin())).await.unwrap().json().await.unwrap();
    let app = &apps[0];
    assert_eq!((&app["userAgent"], &app["endpointId"], &app["modalities"]), (&json!("contoso-bot/2"), &json!("desk-7"), &json!(["Audio"])), "{apps}");
    assert_eq!(app["pollTimeoutSecs"], 240, "server.poll_timeout_secs is the P-GET's timeout: {apps}");
    agent.stop().await;
}

#[tokio::test]
async fn faults_injected_over_http_are_recovered_from() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('added') end)\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let http = reqwest::Client::new();
    let r = http.post(format!("{}/sim/v1/faults", sim.origin())).json(&json!({"kind": "too_many_requests", "count": 2})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = http.post(format!("{}/sim/v1/faults", sim.origin())).json(&json!({"kind": "no_such_fault"})).send().await.unwrap();
    assert_eq!(r.status(), 400, "an unknown fault is refused");
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("calls", 1).await, ["added"]);
    assert_eq!(sim.counters()["faults_applied"], 2);
    agent.stop().await;
}

#[tokio::test]
async fn http_requests_send_their_headers_follow_no_redirect_and_know_the_time() {
    // A receiver that records a header and redirects elsewhere.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(req.headers().get("x-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
            (axum::http::StatusCode::FOUND, [("location", "http://127.0.0.1:9/elsewhere")], "moved")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hook.lua",
        &format!(
            "agent.on('audioVideoSession', 'added', function(e)\n\
               local r = agent.http.request{{url = 'http://127.0.0.1:{port}/hook', headers = {{['X-Token'] = 's3'}}}}\n\
               agent.log.info(r.status .. ' ' .. r.headers.location .. ' ' .. r.body)\n\
               agent.log.info(tostring(math.abs(agent.now() - os.time() * 1000) < 60000))\n\
             end)\n"
        ),
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &format!("http_allow = [\"127.0.0.1:{port}\"]"))).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(
        agent.messages("hook", 2).await,
        ["302 http://127.0.0.1:9/elsewhere moved", "true"],
        "the redirect is returned, not followed; agent.now() is the time"
    );
    assert_eq!(tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap().unwrap(), "s3", "the script's header was sent");
    assert!(rx.try_recv().is_err(), "one request: nothing followed the redirect");
    agent.stop().await;
}
