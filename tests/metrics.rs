//! `/metrics` parsed as Prometheus text, with counters checked against a known call sequence;
//! `/healthz` through sign-in, polling and failure.

mod common;

use common::*;
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{CallOutcome, CallSpec, Fault};

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text format")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a plain value"),
    }
}

async fn health(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn metrics_count_a_known_call_sequence() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', function(e) agent.log.info(e.type) end)\n");
    write(dir.path(), "broken.lua", "agent.on('audioVideoInvitation', 'completed', function(e) error('nope') end)\n");
    write(dir.path(), "looping.lua", "agent.on('audioVideoSession', 'added', function(e) while true do end end)\n");
    write(dir.path(), "unloadable.lua", "this is not lua\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "instruction_limit = 1000000\n[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    let addr = agent.metrics.expect("metrics configured");
    let (status, body) = health(addr).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("polling")));

    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("calls", 2).await, ["added", "updated"]);
    sim.end_call(c);
    assert_eq!(agent.messages("calls", 1).await, ["deleted"]);
    sim.start_call(CallSpec { outcome: CallOutcome::Missed, ring_ms: Some(5), ..CallSpec::default() }).unwrap();
    // Both invitations' completions fail in broken.lua; wait until both have, and until the
    // cursors are written (within 10 ms of the last handler).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let s = loop {
        let s = scrape(addr).await;
        if value(&s, "ucwa_handler_errors_total", &[("script", "broken")]) == 2.0
            && value(&s, "ucwa_journal_lag", &[("script", "broken")]) == 0.0
            && value(&s, "ucwa_journal_lag", &[("script", "calls")]) == 0.0
            && value(&s, "ucwa_handler_limit_stops_total", &[("script", "looping")]) == 1.0
        {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "the missed call reaches broken.lua");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for kind in ["added", "updated", "deleted"] {
        assert_eq!(value(&s, "ucwa_events_total", &[("rel", "audioVideoSession"), ("type", kind)]), 1.0, "{kind}");
    }
    assert_eq!(value(&s, "ucwa_events_total", &[("rel", "audioVideoInvitation"), ("type", "started")]), 2.0);
    assert_eq!(value(&s, "ucwa_events_total", &[("rel", "audioVideoInvitation"), ("type", "completed")]), 2.0);
    assert_eq!(value(&s, "ucwa_handler_calls_total", &[("script", "calls")]), 3.0);
    assert_eq!(value(&s, "ucwa_handler_errors_total", &[("script", "calls")]), 0.0);
    assert_eq!(value(&s, "ucwa_handler_errors_total", &[("script", "broken")]), 2.0);
    assert_eq!(value(&s, "ucwa_reloads_ok_total", &[("script", "calls")]), 1.0);
    assert_eq!(value(&s, "ucwa_sign_ins_total", &[]), 1.0);
    assert_eq!(value(&s, "ucwa_token_renewals_total", &[]), 1.0);
    assert_eq!(value(&s, "ucwa_up", &[]), 1.0);
    assert_eq!(value(&s, "ucwa_journal_lag", &[("script", "calls")]), 0.0);
    assert!(value(&s, "ucwa_lua_memory_bytes", &[("script", "calls")]) > 10_000.0);
    let batches = value(&s, "ucwa_batches_total", &[]);
    assert!(batches >= 3.0 && value(&s, "ucwa_polls_total", &[]) >= batches);
    let duration_count = s.samples.iter().find(|x| x.metric == "ucwa_handler_duration_seconds" && x.labels.get("script") == Some("calls"));
    assert!(duration_count.is_some(), "the duration histogram is there");
    let count = |name: &str, labels: &[(&str, &str)]| {
        s.samples.iter().find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).map(|x| match &x.value {
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            _ => f64::NAN,
        })
    };
    assert_eq!(count("ucwa_handler_duration_seconds", &[("script", "calls")]), Some(3.0), "one observation per handler call");
    assert!(count("ucwa_event_delivery_seconds", &[]).unwrap_or(0.0) >= 3.0, "each handler start is a delivery observed");
    assert_eq!(value(&s, "ucwa_handler_limit_stops_total", &[("script", "looping")]), 1.0);
    assert_eq!(value(&s, "ucwa_handler_errors_total", &[("script", "looping")]), 1.0, "a limit stop is an error too");
    assert_eq!(value(&s, "ucwa_reloads_failed_total", &[("script", "unloadable")]), 1.0);
    assert!(value(&s, "ucwa_journal_depth", &[]) >= 0.0 && value(&s, "ucwa_uptime_seconds", &[]) >= 0.0);
    assert_eq!(
        sim.counters()["events"].as_f64().unwrap(),
        s.samples
            .iter()
            .filter(|x| x.metric == "ucwa_events_total")
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum::<f64>()
            - 1.0,
        "every event the simulator sent, plus the agent's signedIn"
    );
    agent.stop().await;
}

#[tokio::test]
async fn healthz_follows_sign_in_and_failures() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // Wrong password: never signed in.
    std::env::set_var("UCWA_AGENT_TEST_WRONG", "wrong");
    let text = config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\"").replace(PASSWORD_ENV, "UCWA_AGENT_TEST_WRONG");
    let agent = start_agent_waiting(&sim, &text, false).await;
    let addr = agent.metrics.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) = health(addr).await;
        assert_eq!(status, 503);
        if body["last_error"].as_str().is_some_and(|e| e.contains("invalid_grant")) {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["state"], "signing_in");
    agent.stop().await;

    // Signed in and polling, then the pool fails every poll: 503 until it recovers.
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    let addr = agent.metrics.unwrap();
    assert_eq!(health(addr).await.0, 200);
    sim.inject(Fault::ServerError { status: 503, retry_after: None }, 3);
    sim.start_call(answered_call()).unwrap(); // releases the parked poll; the next ones fail
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = health(addr).await;
        if status == 503 {
            assert_eq!(body["state"], "recovering");
            assert!(body["last_error"].as_str().unwrap().contains("503"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health(addr).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "recovers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn healthz_says_stopping_while_scripts_finish() {
    let sim = start_sim(sim_config()).await;
    let port = silent_server().await;
    let dir = tempfile::tempdir().unwrap();
    // A handler that waits (for up to a minute) on a server that never answers.
    write(
        dir.path(),
        "busy.lua",
        &format!("agent.on('audioVideoSession', 'added', function(e) agent.log.info('waiting') agent.http.request{{url = 'http://127.0.0.1:{port}/'}} end)\n"),
    );
    let extra = format!("http_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 60000\n[metrics]\nlisten = \"127.0.0.1:0\"");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    let addr = agent.metrics.expect("metrics configured");
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("busy", 1).await, ["waiting"]);
    let stopping = tokio::spawn(agent.stop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = health(addr).await;
        if body["state"] == "stopping" {
            assert_eq!(status, 503, "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never stopping: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stopping.await.unwrap();
}

/// Counts calls by direction, times them, and says how many are up; `VERSION` is logged so a
/// test can tell when the reload happened.
const SCRIPT_METRICS: &str = r#"
local calls = agent.metrics.counter("calls_total", "Calls seen, by direction.")
local up = agent.metrics.gauge("calls_up", "Calls in progress.")
local length = agent.metrics.histogram("call_seconds", "How long calls last.", {1, 10, 60})
agent.on("audioVideoSession", "added", function(e)
  calls:inc(1, { direction = "Incoming" })
  up:inc()
  length:observe(5)
  agent.log.info("VERSION counted")
end)
agent.on("audioVideoSession", "deleted", function(e) up:dec() agent.log.info("VERSION ended") end)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_publish_metrics_that_survive_a_reload() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "counting.lua", &SCRIPT_METRICS.replace("VERSION", "v1"));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 20\n[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    let addr = agent.metrics.unwrap();
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("counting", 1).await, ["v1 counted"]);
    let s = scrape(addr).await;
    assert_eq!(value(&s, "ucwa_script_calls_total", &[("script", "counting"), ("direction", "Incoming")]), 1.0);
    assert_eq!(value(&s, "ucwa_script_calls_up", &[("script", "counting")]), 1.0);
    // A new version finds its metrics where the old one left them.
    sim.end_call(call);
    assert_eq!(agent.messages("counting", 1).await, ["v1 ended"]);
    write(dir.path(), "counting.lua", &SCRIPT_METRICS.replace("VERSION", "v2"));
    agent.expect("version 2 loaded", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "counting")).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("counting", 1).await, ["v2 counted"]);
    let s = scrape(addr).await;
    assert_eq!(value(&s, "ucwa_script_calls_total", &[("script", "counting"), ("direction", "Incoming")]), 2.0);
    assert_eq!(value(&s, "ucwa_script_calls_up", &[("script", "counting")]), 1.0, "one ended, one up");
    // A name the agent's own metrics use is refused (it would break the whole page).
    write(dir.path(), "clash.lua", "agent.metrics.gauge('stuck', 'mine')\n");
    let failed = agent.expect("clash refused", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "clash")).await;
    assert!(format!("{failed:?}").contains("reserved"), "{failed:?}");
    let hist = s.samples.iter().find(|x| x.metric == "ucwa_script_call_seconds").expect("the histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(h) => assert_eq!(h.iter().find(|b| b.less_than == 10.0).map(|b| b.count), Some(2.0)),
        other => panic!("not a histogram: {other:?}"),
    }
    agent.stop().await;
}
