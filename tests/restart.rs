//! The agent process is killed (SIGKILL) in the middle of a stream of calls and started again:
//! the script has then seen every audioVideoSession event exactly once, in order. The script
//! records what it sees in `agent.state`, which is committed together with its cursor, so the
//! record is exactly what the script finished.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ucwa_agent::sim::CallSpec;

const RECORDER: &str = r#"
agent.on("audioVideoSession", function(e)
  local log = agent.state.log or {}
  log[#log + 1] = { seq = e.seq, type = e.type, href = e.href }
  agent.state.log = log
end)
"#;

/// What the script has committed so far.
fn recorded(db: &Path) -> Vec<serde_json::Value> {
    saved_state(db, "recorder")["log"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_and_repeat_nothing() {
    const CALLS: usize = 24;
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    write(&scripts, "recorder.lua", RECORDER);
    let config = dir.path().join("config.toml");
    let text = format!(
        "[server]\ndiscover = \"{}\"\nmax_backoff_secs = 1\n[auth]\nkind = \"password\"\nusername = \"demo@contoso.com\"\npassword_env = \"{PASSWORD_ENV}\"\n[scripts]\ndir = \"scripts\"\nwatch = false\n[state]\ndir = \"state\"\n",
        sim.discovery_url()
    );
    std::fs::write(&config, text).unwrap();
    let db = dir.path().join("state/agent.db");

    let mut agent = spawn_agent(&config, Stdio::null());
    wait_available(&sim).await;
    // A stream of calls, each answered, established and hung up: three session events each.
    let calls = {
        let sim_calls: Vec<CallSpec> = (0..CALLS).map(|_| CallSpec { ring_ms: Some(5), duration_ms: Some(400), ..CallSpec::default() }).collect();
        sim_calls
    };
    let mut started = Vec::new();
    for (i, spec) in calls.into_iter().enumerate() {
        started.push(sim.start_call(spec).expect("the application stays available"));
        tokio::time::sleep(Duration::from_millis(40)).await;
        if i == CALLS / 2 {
            eventually("some events recorded", || recorded(&db).len() >= 6).await;
            agent.kill().expect("SIGKILL");
            agent.wait().unwrap();
        }
    }
    // Calls went on ringing and ending while the agent was dead; start it again.
    let mut agent = spawn_agent(&config, Stdio::null());
    eventually("every session event", || recorded(&db).len() >= CALLS * 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();

    let log = recorded(&db);
    assert_eq!(log.len(), CALLS * 3, "each call's added, updated and deleted, once: {log:#?}");
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in channel order: {seqs:?}");
    let mut per_call: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &log {
        per_call.entry(e["href"].as_str().unwrap().to_string()).or_default().push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(per_call.len(), CALLS);
    for (href, types) in per_call {
        assert_eq!(types, ["added", "updated", "deleted"], "{href}");
    }
    assert_eq!(sim.counters()["applications_created"], 1, "the restart resumed the same application's channel");
}
