//! Resharding a fleet: two agents sharded 2 ways, then three after resharding. The accounts
//! that move (about a third, all to the new shard) are carried with `ucwa-agent state export`
//! and `state import`, and go on where they were: their `agent.state` and cursor intact, every
//! event the pool sent them handled once, in order, none lost.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use tokio::sync::{broadcast, oneshot};
use ucwa_agent::agent::{Agent, RunEnd};
use ucwa_agent::config::{shard_of, Config, Shard};
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{CallSpec, SimConfig, Simulator};

const NAMES: [&str; 6] = ["ann", "bob", "cat", "dan", "eve", "fay"];

/// Every channel event's seq, kept in `agent.state`; a line when a call is up and when it is over.
const EVERY_EVENT: &str = r#"
agent.on("*", function(e)
  if e.rel == "agent" then return end
  agent.state.seqs = agent.state.seqs or {}
  table.insert(agent.state.seqs, e.seq)
  if e.rel == "audioVideoSession" and e.type == "added" then agent.log.info("call up") end
  if e.rel == "audioVideoSession" and e.type == "deleted" then agent.log.info("call over") end
end)
"#;

fn user(name: &str) -> String {
    format!("{name}@contoso.com")
}

/// The configuration of the agent whose state is `dir/<state>`: the same accounts for all.
fn config_file(sim: &Simulator, dir: &Path, state: &str) -> std::path::PathBuf {
    let mut text =
        format!("[server]\nmax_backoff_secs = 1\n[state]\ndir = \"{}\"\n[scripts]\ndir = \"{}\"\n", dir.join(state).display(), dir.join("scripts").display());
    for n in NAMES {
        text += &format!(
            "[[account]]\nname = \"{n}\"\ndiscover = \"{}\"\n[account.auth]\nkind = \"password\"\nusername = \"{}\"\npassword_env = \"{PASSWORD_ENV}\"\n",
            sim.discovery_url(),
            user(n)
        );
    }
    let path = dir.join(format!("{state}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One agent of the fleet, running in this process.
struct Running {
    outputs: BTreeMap<String, broadcast::Receiver<ScriptOutput>>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<RunEnd>,
}

async fn start(path: &Path, shard: Shard) -> Running {
    std::env::set_var(PASSWORD_ENV, "demo");
    let agent = Agent::start_shard(Config::load(path).unwrap(), Some(shard)).await.expect("the agent starts");
    let outputs = NAMES
        .iter()
        .filter(|n| shard_of(n, shard.count) == shard.index)
        .map(|n| (n.to_string(), agent.account_scripts(n).expect("the account runs on its shard").subscribe()))
        .collect();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    Running { outputs, stop, task }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    let end = tokio::time::timeout(PATIENCE, r.task).await.expect("the agent stops").expect("the agent task ends");
    assert_eq!(end, RunEnd::Stopped);
}

/// Waits until every account has an application available with its P-GET parked.
async fn all_available(sim: &Simulator) {
    let url = format!("{}/sim/v1/applications", sim.origin());
    eventually_async("every account available", || async {
        let apps: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        NAMES.iter().all(|n| apps.as_array().unwrap().iter().any(|a| a["user"] == user(n) && a["available"] == true && a["pollParked"] == true))
    })
    .await;
}

async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One call to every account, up then over, each seen by its account's script.
async fn a_call_each(sim: &Simulator, fleet: &mut [Running]) {
    let calls: Vec<u64> = NAMES.iter().map(|n| sim.start_call(CallSpec { user: Some(user(n)), ..answered_call() }).unwrap()).collect();
    for line in ["call up", "call over"] {
        for r in fleet.iter_mut() {
            for (name, rx) in r.outputs.iter_mut() {
                expect(rx, &format!("{name}: {line}"), |o| matches!(o, ScriptOutput::Log { message, .. } if message == line)).await;
            }
        }
        if line == "call up" {
            for &c in &calls {
                sim.end_call(c);
            }
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    agent_command(args, &[]).stdout(std::process::Stdio::piped()).output().expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_from_2_to_3_moves_a_third_of_the_accounts_with_their_state() {
    let sim = start_sim(SimConfig { users: NAMES.iter().map(|n| (user(n), "demo".to_string())).collect(), ..sim_config() }).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    write(&dir.path().join("scripts"), "all.lua", EVERY_EVENT);
    // Agent K keeps its state in `sK` (its own volume), whatever the number of shards.
    let configs: Vec<_> = (0..3).map(|k| config_file(&sim, dir.path(), &format!("s{k}"))).collect();
    let moved: Vec<&str> = NAMES.iter().copied().filter(|n| shard_of(n, 2) != shard_of(n, 3)).collect();
    assert!(!moved.is_empty() && moved.len() < NAMES.len(), "these names exercise both cases: {moved:?}");
    assert!(moved.iter().all(|n| shard_of(n, 3) == 2), "a moved account goes to the new shard");

    let mut fleet = vec![start(&configs[0], Shard { index: 0, count: 2 }).await, start(&configs[1], Shard { index: 1, count: 2 }).await];
    all_available(&sim).await;
    a_call_each(&sim, &mut fleet).await;
    for r in fleet {
        stop(r).await;
    }
    let before: BTreeMap<&str, serde_json::Value> =
        NAMES.iter().map(|n| (*n, saved_state(&dir.path().join(format!("s{}/{n}/agent.db", shard_of(n, 2))), "all"))).collect();

    // The move: export from the old agent's state, import into the new one's.
    for n in &moved {
        let file = dir.path().join(format!("{n}.state.json"));
        let from = configs[shard_of(n, 2) as usize].to_str().unwrap();
        let o = run(&["state", "export", "--config", from, "--account", n, "--out", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let to = configs[2].to_str().unwrap();
        // Not over a running agent's state (its lock held).
        let held = ucwa_agent::store::DirLock::acquire(&dir.path().join(format!("s2/{n}"))).unwrap();
        let o = run(&["state", "import", "--config", to, file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another ucwa-agent"), "{}", String::from_utf8_lossy(&o.stderr));
        drop(held);
        let o = run(&["state", "import", "--config", to, file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("imported account {n}: 1 script(s)")), "{}", String::from_utf8_lossy(&o.stderr));
    }

    let mut fleet = Vec::new();
    for k in 0..3 {
        fleet.push(start(&configs[k as usize], Shard { index: k, count: 3 }).await);
    }
    all_available(&sim).await;
    a_call_each(&sim, &mut fleet).await;
    for r in fleet {
        stop(r).await;
    }

    let sent = sim.counters()["events_by_user"].clone();
    for n in NAMES {
        let state = saved_state(&dir.path().join(format!("s{}/{n}/agent.db", shard_of(n, 3))), "all");
        let seqs: Vec<u64> = state["seqs"].as_array().expect("seqs recorded").iter().map(|v| v.as_u64().unwrap()).collect();
        let old: Vec<u64> = before[n]["seqs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(!old.is_empty() && seqs.starts_with(&old), "{n}: agent.state kept across the move: {old:?} then {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{n}: in order, none handled twice: {seqs:?}");
        assert_eq!(seqs.len() as u64, sent[user(n)].as_u64().unwrap(), "{n}: every event sent to it handled once, none lost: {seqs:?} {sent}");
    }
}
