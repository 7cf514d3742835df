//! Traces (issue 23): what each script did with each event, read with `trace` (beside a running
//! agent and after it stopped), from `/api/traces`, and live with `tap` / `/api/tap`.

mod common;

use common::*;
use std::io::BufRead;
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;

const SECRET_ENV: &str = "UCWA_AGENT_TRACES_TEST_TOKEN";
const SECRET: &str = "tr4ce-s3cret-value";

const OK: &str = r#"agent.on("audioVideoSession", "added", function(e)
  agent.log.info("call added, token " .. agent.config.token)
  local r = agent.ucwa.get(agent.ucwa.application())
  agent.log.info("application " .. r.status)
  agent.state.calls = (agent.state.calls or 0) + 1
  agent.after(60000, function() end)
  agent.after(0, function() agent.log.info("tick") end)
end)
agent.on("audioVideoSession", "nothing", function(e) end)
agent.on_unload(function() agent.log.info("bye") end)
"#;

const FAILING: &str = "agent.on(\"audioVideoSession\", \"added\", function(e)\n  local t = nil\n  return t.field\nend)\n";

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// `ucwa-agent trace --config CONFIG ARGS…`: its standard output (the command must succeed).
fn trace_cli(config: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["trace", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = agent_command(&all, &[]).stdout(std::process::Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "trace {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn trace_shows_what_each_handler_did_and_where_it_failed_across_a_restart() {
    std::env::set_var(SECRET_ENV, SECRET);
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ok.lua", OK);
    write(dir.path(), "failing.lua", FAILING);
    write(dir.path(), "unloadable.lua", "this is not lua\n");
    write(dir.path(), "looping.lua", "agent.on('audioVideoSession', 'added', function(e) while true do end end)\n");
    let config = config_file(
        &sim,
        dir.path(),
        &format!("instruction_limit = 1000000\n[scripts.config.ok]\ntoken = {{ env = \"{SECRET_ENV}\" }}\n[metrics]\nlisten = \"127.0.0.1:0\""),
    );
    let mut agent = start_agent_from_file(&sim, &config).await;
    let addr = agent.metrics.expect("the listener");
    sim.start_call(answered_call()).unwrap();
    let (mut failed_seen, mut ok_seen) = (false, false);
    while !(failed_seen && ok_seen) {
        match agent.expect("both scripts' handlers", |o| matches!(o, ScriptOutput::HandlerError { .. } | ScriptOutput::Log { .. })).await {
            ScriptOutput::HandlerError { script, .. } if script == "failing" => failed_seen = true,
            ScriptOutput::Log { script, message, .. } if script == "ok" && message == "application 200" => ok_seen = true,
            ScriptOutput::HandlerError { script, error, .. } if script == "ok" => panic!("ok.lua failed: {error}"),
            _ => {}
        }
    }

    // The failing handler's trace, once committed: the event, the error and where it was.
    let failed = find_trace(&format!("http://{addr}/api/traces?script=failing"), |t| t["calls"][0]["outcome"] == "error").await;
    assert_eq!(failed["event"]["rel"], "audioVideoSession");
    assert_eq!(failed["event"]["type"], "added");
    assert_eq!(failed["account"], "default", "a loopback listener names accounts");
    assert_eq!(failed["version"], 1);
    assert_eq!(failed["calls"][0]["at"], "failing.lua:3", "{failed}");
    let seq = failed["event"]["seq"].as_u64().unwrap();

    // The same event in ok.lua: which subscription matched, what the handler did, in order.
    let ok = find_trace(&format!("http://{addr}/api/traces?seq={seq}"), |t| t["script"] == "ok").await;
    // A limit broken is said as such.
    let looping = find_trace(&format!("http://{addr}/api/traces?seq={seq}"), |t| t["script"] == "looping").await;
    assert_eq!(looping["calls"][0]["outcome"], "limit", "{looping}");
    assert!(looping["calls"][0]["error"].as_str().unwrap().contains("instruction"), "{looping}");
    // A script that could not load misses the events: its traces say so.
    let missed = find_trace(&format!("http://{addr}/api/traces?script=unloadable&seq={seq}"), |_| true).await;
    assert!(missed["skipped"].as_str().unwrap().starts_with("not loaded: "), "{missed}");
    assert_eq!(ok["subscriptions"][0]["matched"], "yes");
    assert_eq!(ok["subscriptions"][1]["matched"], "rel only", "rel matched, type did not: {ok}");
    let call = &ok["calls"][0];
    assert_eq!((call["what"].as_str(), call["outcome"].as_str(), call["sub"].as_u64()), (Some("handler"), Some("ok"), Some(0)));
    let steps = call["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["do"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["log", "request", "log", "timer", "timer"], "{ok}");
    assert_eq!(steps[0]["message"], "call added, token [redacted]");
    assert_eq!((steps[1]["method"].as_str(), steps[1]["status"].as_u64()), (Some("GET"), Some(200)));
    assert!(steps[1]["target"].as_str().unwrap().starts_with("/ucwa/oauth/v1/applications/"), "{ok}");
    assert_eq!((steps[3]["op"].as_str(), steps[3]["ms"].as_i64()), (Some("set"), Some(60000)));
    // The state it wrote, on the last trace of the commit that wrote it.
    find_trace(&format!("http://{addr}/api/traces?script=ok"), |t| t["state"]["set"] == serde_json::json!(["calls"])).await;

    // `trace` beside the running agent (read-only, beside the writer).
    let text = trace_cli(&config, &["--seq", &seq.to_string()]);
    assert!(text.contains("failing v1") && text.contains("error at failing.lua:3"), "{text}");
    assert!(text.contains("ok v1") && text.contains("agent.ucwa GET /ucwa/") && text.contains("→ 200"), "{text}");
    assert!(text.contains("error at failing.lua:3: attempt to index a nil value"), "{text}");
    assert!(text.contains("log info: call added, token [redacted]") && text.contains("rel matched, type did not"), "{text}");
    agent.stop().await;

    // After it stopped, and after it started again: the traces are still there.
    let text = trace_cli(&config, &["--script", "failing", "--json"]);
    let stored: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(stored.iter().any(|t| t["event"]["seq"] == seq && t["calls"][0]["at"] == "failing.lua:3"), "{text}");
    // The timer's run and on_unload's (at the stop) have traces of their own.
    let text = trace_cli(&config, &["--script", "ok", "--json"]);
    let stored: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let run = |kind: &str, message: &str| {
        stored.iter().any(|t| t["kind"] == kind && t["calls"][0]["what"] == kind && t["calls"][0]["steps"][0]["message"] == message)
    };
    assert!(run("timer", "tick") && run("on_unload", "bye"), "{text}");
    let agent = start_agent_from_file(&sim, &config).await;
    let addr = agent.metrics.unwrap();
    let again = get_json(&format!("http://{addr}/api/traces?seq={seq}&limit=10")).await;
    assert_eq!(again.as_array().unwrap().len(), 4, "the four scripts' traces of the event: {again}");
    // The secret appears nowhere: not in the database, not in an answer.
    let all = get_json(&format!("http://{addr}/api/traces?limit=1000")).await.to_string();
    assert!(!all.contains(SECRET) && all.contains("[redacted]"), "{all}");
    agent.stop().await;
    let db = std::fs::read(dir.path().join(".state/agent.db")).unwrap();
    let wal = std::fs::read(dir.path().join(".state/agent.db-wal")).unwrap_or_default();
    let needle = SECRET.as_bytes();
    assert!(!db.windows(needle.len()).chain(wal.windows(needle.len())).any(|w| w == needle), "the secret is in the database");
    assert!(trace_cli(&config, &["--last", "100"]).contains("[redacted]"));
}

/// The first trace of `url`'s answer that `pred` accepts, once there is one.
async fn find_trace(url: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let t = get_json(url).await;
        if let Some(found) = t.as_array().unwrap().iter().find(|t| pred(t)) {
            return found.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no such trace in {url}: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tap_streams_events_and_traces_while_a_call_happens() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', function(e) agent.log.info('call ' .. e.type) end)\n");
    // Every address, no authentication: accounts are not named (as in /healthz).
    let config = config_file(&sim, dir.path(), "[metrics]\nlisten = \"0.0.0.0:0\"");
    let mut agent = start_agent_from_file(&sim, &config).await;
    let port = agent.metrics.unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut tap = agent_command(&["tap", "--config", config.to_str().unwrap(), "--metrics-listen", &listen, "--rel", "audioVideoSession"], &[])
        .stdout(std::process::Stdio::piped())
        .spawn_guarded();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = tap.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The stream is open once the tap listens: calls until it shows one (the first call may
    // come before the tap connected).
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut calls = 0;
    while !(seen.iter().any(|l: &String| l.starts_with("event #") && l.contains("audioVideoSession added"))
        && seen.iter().any(|l| l.contains("calls v1  event #") && l.contains("audioVideoSession added"))
        && seen.iter().any(|l| l.contains("log info: call added")))
    {
        assert!(tokio::time::Instant::now() < deadline, "the tap showed {seen:?}");
        if calls < 5 {
            let c = sim.start_call(answered_call()).unwrap();
            agent.messages("calls", 2).await;
            sim.end_call(c);
            agent.messages("calls", 1).await;
            calls += 1;
        }
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            seen.push(line);
        }
    }
    assert!(!seen.iter().any(|l| l.contains("audioVideoInvitation")), "filtered by rel: {seen:?}");
    assert!(!seen.iter().any(|l| l.contains("[default]")), "no account names on this listener: {seen:?}");
    let traces = get_json(&format!("http://{listen}/api/traces?script=calls")).await;
    assert!(traces.as_array().unwrap().iter().all(|t| t.get("account").is_none()), "{traces}");
    let refused = reqwest::get(format!("http://{listen}/api/traces?account=default")).await.unwrap();
    assert_eq!(refused.status(), 400);
    drop(tap);
    agent.stop().await;
}

#[tokio::test]
async fn the_api_asks_for_the_metrics_users_password_and_tap_signs_in_with_it() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', function(e) end)\n");
    // Cost 4: the lowest bcrypt allows, so the test is quick.
    let hash = bcrypt::hash("tap-pw", 4).unwrap();
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"127.0.0.1:0\"\nbasic_auth_users = {{ ops = \"{hash}\" }}"));
    let agent = start_agent_from_file(&sim, &config).await;
    let addr = agent.metrics.unwrap().to_string();
    let http = reqwest::Client::new();
    for path in ["/api/traces", "/api/tap"] {
        assert_eq!(http.get(format!("http://{addr}{path}")).send().await.unwrap().status(), 401, "{path}");
    }
    let ok = http.get(format!("http://{addr}/api/traces")).basic_auth("ops", Some("tap-pw")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let tap = |password: &str| {
        agent_command(&["tap", "--config", config.to_str().unwrap(), "--metrics-listen", &addr], &[("UCWA_AGENT_API_PASSWORD", password)])
            .stderr(std::process::Stdio::piped())
            .spawn_guarded()
    };
    // A wrong password: refused, said, exit status 2.
    let mut wrong = tap("nope");
    assert_eq!(exit_within(&mut wrong, PATIENCE).await.0, Some(2));
    let mut said = String::new();
    std::io::Read::read_to_string(wrong.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert!(said.contains("401"), "{said}");
    // The right one: it stays connected until the agent stops, then ends by itself.
    let mut right = tap("tap-pw");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(right.try_wait().unwrap().is_none(), "tap connected and waits for events");
    agent.stop().await;
    assert_eq!(exit_within(&mut right, PATIENCE).await.0, Some(0));
}
