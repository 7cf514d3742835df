//! More accounts than `state.open_databases`: the agent holds only that many account databases
//! open at once (the others are closed and opened again at their next use), and no account
//! notices. Every account's script still sees every event of its own, once and in order, with
//! its `agent.state` intact across closes; a SIGKILL with some databases open and others
//! closed loses nothing committed and repeats nothing after the restart.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use ucwa_agent::sim::{CallSpec, SimConfig, Simulator};

/// Records every channel event (seq, href, type) in `agent.state`, committed with its cursor.
const RECORDER: &str = r#"
agent.on("*", function(e)
  if e.rel == "agent" then return end
  local log = agent.state.log or {}
  log[#log + 1] = { seq = e.seq, href = e.href, rel = e.rel, type = e.type }
  agent.state.log = log
end)
"#;

fn user(i: usize) -> String {
    format!("user{i}@contoso.com")
}

fn sim_of(n: usize) -> SimConfig {
    SimConfig { users: (0..n).map(|i| (user(i), "demo".to_string())).collect(), ..sim_config() }
}

/// A configuration of `n` accounts (`a0`, `a1`, …) sharing one recording script, with at most
/// `open` databases open.
fn config(sim: &Simulator, dir: &Path, n: usize, open: usize) -> std::path::PathBuf {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    write(&scripts, "recorder.lua", RECORDER);
    let mut text = format!("[server]\nmax_backoff_secs = 1\n[scripts]\ndir = \"scripts\"\nwatch = false\n[state]\ndir = \"state\"\nopen_databases = {open}\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[account]]\nname = \"a{i}\"\ndiscover = \"{}\"\n[account.auth]\nkind = \"password\"\nusername = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
            sim.discovery_url(),
            user(i)
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn recorded(dir: &Path, account: usize) -> Vec<serde_json::Value> {
    saved_state(&dir.join(format!("state/a{account}/agent.db")), "recorder")["log"].as_array().cloned().unwrap_or_default()
}

/// The account databases (`agent.db`) the process `pid` has open now. (Each once: SQLite keeps
/// the file of a connection closed while another to the same file is open, for its locks'
/// sake, until that one closes too.)
fn open_databases(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let files: std::collections::BTreeSet<std::path::PathBuf> =
        fds.flatten().filter_map(|f| std::fs::read_link(f.path()).ok()).filter(|t| t.to_string_lossy().ends_with("/agent.db")).collect();
    files.len()
}

/// Waits until every one of `n` users has an application available with its P-GET parked.
async fn all_available(sim: &Simulator, n: usize) {
    let url = format!("{}/sim/v1/applications", sim.origin());
    let http = test_http();
    let wait = async {
        loop {
            let apps: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            let ready = apps.as_array().unwrap().iter().filter(|a| a["available"] == true && a["pollParked"] == true).count();
            if ready >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("every account becomes available");
}

/// What an account recorded holds together: strictly rising seqs, each call's session events once.
fn in_order_once(account: usize, log: &[serde_json::Value]) {
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a{account}: in channel order, no repeats: {seqs:?}");
    let mut per_call: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for e in log.iter().filter(|e| e["rel"] == "audioVideoSession") {
        per_call.entry(e["href"].as_str().unwrap()).or_default().push(e["type"].as_str().unwrap());
    }
    for (href, types) in per_call {
        assert_eq!(types, ["added", "updated", "deleted"], "a{account}: {href}, once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_past_the_open_databases_keep_every_event_in_order() {
    const N: usize = 6;
    const OPEN: usize = 2;
    let sim = start_sim(sim_of(N)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sim, dir.path(), N, OPEN);
    let agent = spawn_agent(&config, Stdio::inherit());
    all_available(&sim, N).await;
    for round in 1..=3 {
        for i in 0..N {
            sim.start_call(CallSpec { user: Some(user(i)), ring_ms: Some(5), duration_ms: Some(50), ..CallSpec::default() }).expect("the account is available");
        }
        for i in 0..N {
            // Each account's databases were closed and opened again while the others were used.
            eventually(&format!("a{i}: round {round}'s call"), || {
                recorded(dir.path(), i).iter().filter(|e| e["rel"] == "audioVideoSession").count() >= 3 * round
            })
            .await;
        }
        eventually(&format!("at most {OPEN} databases open (round {round})"), || open_databases(agent.id()) <= OPEN).await;
    }
    // Every event the simulator sent each user, once, in order, in that account's state only.
    let sent = sim.counters()["events_by_user"].clone();
    for i in 0..N {
        let want = sent[user(i)].as_u64().unwrap() as usize;
        eventually(&format!("a{i}: all {want} events"), || recorded(dir.path(), i).len() >= want).await;
        let log = recorded(dir.path(), i);
        in_order_once(i, &log);
        assert_eq!(log.len(), want, "a{i} saw every event sent to it and nothing else: {sent}");
    }
    assert_eq!(sim.counters()["applications_created"], N as u64, "no account lost its channel to a closed database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_databases_open_and_closed_loses_and_repeats_nothing() {
    const N: usize = 4;
    const CALLS: usize = 6;
    let sim = start_sim(sim_of(N)).await;
    let dir = tempfile::tempdir().unwrap();
    // One open database for four busy accounts: at the kill, one is open (mid-write, maybe)
    // and three are closed or closing.
    let config = config(&sim, dir.path(), N, 1);
    let mut agent = spawn_agent(&config, Stdio::inherit());
    all_available(&sim, N).await;
    let mut calls = Vec::new();
    for c in 0..CALLS {
        for i in 0..N {
            calls.push(sim.start_call(CallSpec { user: Some(user(i)), ring_ms: Some(5), duration_ms: Some(300), ..CallSpec::default() }).expect("available"));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        if c == CALLS / 2 {
            eventually("some events recorded by every account", || (0..N).all(|i| recorded(dir.path(), i).len() >= 3)).await;
            agent.kill().expect("SIGKILL");
            agent.wait().unwrap();
        }
    }
    let mut agent = spawn_agent(&config, Stdio::inherit());
    for i in 0..N {
        eventually(&format!("a{i}: every session event"), || recorded(dir.path(), i).iter().filter(|e| e["rel"] == "audioVideoSession").count() >= CALLS * 3)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    for i in 0..N {
        let log = recorded(dir.path(), i);
        in_order_once(i, &log);
        let calls: Vec<&serde_json::Value> = log.iter().filter(|e| e["rel"] == "audioVideoSession").collect();
        assert_eq!(calls.len(), CALLS * 3, "a{i}: each call's added, updated and deleted, once");
    }
    assert_eq!(sim.counters()["applications_created"], N as u64, "the restart resumed each account's channel");
}

/// An idle account's empty batches find its database closed: their channel position is kept
/// out of it (in memory and in `position.json` beside it) rather than opening it again. A
/// SIGKILL then leaves an older position in the database; the restart resumes from the newer
/// one all the same: no `resync`, and the calls made while the agent was down reach every
/// account once, in order, on the application it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_accounts_position_kept_out_of_its_database_survives_a_sigkill() {
    const N: usize = 3;
    // Every P-GET answers empty after a second: idle accounts have empty batches all the time.
    let sim = start_sim(SimConfig { max_poll_timeout: Duration::from_secs(1), ..sim_of(N) }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sim, dir.path(), N, 1);
    let mut agent = spawn_agent(&config, Stdio::inherit());
    all_available(&sim, N).await;
    for i in 0..N {
        sim.start_call(CallSpec { user: Some(user(i)), ring_ms: Some(5), duration_ms: Some(50), ..CallSpec::default() }).expect("available");
    }
    for i in 0..N {
        eventually(&format!("a{i}: the first call"), || recorded(dir.path(), i).iter().filter(|e| e["rel"] == "audioVideoSession").count() >= 3).await;
    }
    // Idle now: each account's long poll comes back empty several times, two of the three
    // databases closed (one is open at a time).
    let empty = sim.counters()["empty_batches"].as_u64().unwrap();
    eventually("three more empty batches per account", || sim.counters()["empty_batches"].as_u64().unwrap() >= empty + 3 * N as u64).await;
    let kept = |i: usize| dir.path().join(format!("state/a{i}/position.json")).exists();
    assert!((0..N).any(kept), "no account's position was kept out of its database");
    agent.kill().expect("SIGKILL");
    agent.wait().unwrap();
    for i in 0..N {
        sim.start_call(CallSpec { user: Some(user(i)), ring_ms: Some(5), duration_ms: Some(50), ..CallSpec::default() })
            .expect("the application outlives the agent");
    }
    let mut agent = spawn_agent(&config, Stdio::inherit());
    for i in 0..N {
        eventually(&format!("a{i}: the call made while it was down"), || {
            recorded(dir.path(), i).iter().filter(|e| e["rel"] == "audioVideoSession").count() >= 6
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    for i in 0..N {
        let log = recorded(dir.path(), i);
        in_order_once(i, &log);
        assert_eq!(log.iter().filter(|e| e["rel"] == "audioVideoSession").count(), 6, "a{i}: two calls' events, once each");
    }
    let c = sim.counters();
    assert_eq!(c["resyncs"], 0, "every account resumed from its newest position: {c}");
    assert_eq!(c["applications_created"], N as u64, "each account resumed the application it had");
}
