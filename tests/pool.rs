//! Many scripts on a few Lua worker threads (`scripts.workers`): each script still sees its
//! events one at a time and in order, a script stuck in C holds only the worker it is on (a new
//! one takes its place), and a script waiting on a request gives its worker to the others. Each
//! test runs the binary (the pool is one per process) and reads its threads from `/proc`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// What the `mark` scripts logged: per script, the `(seq, type)` of each event in the order
/// they ran.
fn marks(log: &Path) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut seen: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Some(rest) = line.split_once("mark:").map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split(':');
        if let (Some(script), Some(seq), Some(kind)) = (f.next(), f.next().and_then(|s| s.parse().ok()), f.next()) {
            seen.entry(script.to_string()).or_default().push((seq, kind.to_string()));
        }
    }
    seen
}

/// A script that logs `mark:<name>:<seq>:<type>:` for every call event, after some Lua work
/// (so that several scripts are at it at once).
fn marker(name: &str) -> String {
    format!("agent.on('audioVideoSession', function(e) local x = 0 for i = 1, 20000 do x = x + i end agent.log.info('mark:{name}:' .. e.seq .. ':' .. e.type .. ':') end)\n")
}

/// The process's threads: all of them, and those whose name starts with `prefix`.
fn threads(pid: u32, prefix: &str) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok()).map(|c| c.trim_end().to_string()).collect())
        .unwrap_or_default();
    (names.len(), names.iter().filter(|n| n.starts_with(prefix)).count())
}

/// The agent's runtime has a thread per CPU: a bound on threads allows for them.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Each of `scripts` saw `calls` calls end, each its events in order, all the same events.
async fn all_saw(log: &Path, scripts: &[String], calls: usize) {
    eventually(&format!("{} scripts to see {calls} calls end", scripts.len()), || {
        let m = marks(log);
        scripts.iter().all(|s| m.get(s).is_some_and(|v| v.iter().filter(|(_, k)| k == "deleted").count() >= calls))
    })
    .await;
    let m = marks(log);
    let first = &m[&scripts[0]];
    for s in scripts {
        let seen = &m[s];
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{s} saw its events out of order: {seen:?}");
        assert_eq!(seen, first, "{s} and {} saw different events", scripts[0]);
    }
}

/// Calls that ring, are answered and end, one after the other, each ended once every script saw it begin.
async fn calls(sim: &ucwa_agent::sim::Simulator, log: &Path, scripts: &[String], n: usize) {
    for i in 1..=n {
        let call = sim.start_call(answered_call()).unwrap();
        eventually("every script to see the call", || {
            let m = marks(log);
            scripts.iter().all(|s| m.get(s).is_some_and(|v| v.iter().filter(|(_, k)| k == "added").count() >= i))
        })
        .await;
        sim.end_call(call);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_scripts_on_two_workers_each_see_every_event_in_order() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    for n in &names {
        write(dir.path(), &format!("{n}.lua"), &marker(n));
    }
    let config = config_file(&sim, dir.path(), "workers = 2\n");
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    calls(&sim, &log, &names, 4).await;
    all_saw(&log, &names, 4).await;
    let (all, workers) = threads(agent.id(), "lua-worker");
    assert_eq!(workers, 2, "the pool has the size asked for");
    assert!(all < names.len() + cores(), "{all} threads for {} scripts: not one per script", names.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_worker_a_script_stuck_in_c_holds_up_none_of_the_others() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // Sorts two million numbers, a hundred times over, in C: minutes that neither the
    // instruction hook nor the time limit can cut.
    write(
        dir.path(),
        "hog.lua",
        r#"agent.on("audioVideoSession", "added", function()
  agent.log.info("hogging")
  for _ = 1, 100 do
    local t = table.pack(string.byte(string.rep("\1\2\3\4\5\6\7\8", 62500), 1, -1))
    local n = t.n
    for _ = 1, 2 do table.move(t, 1, n, n + 1); n = n * 2 end
    table.sort(t); table.sort(t)
  end
  agent.log.info("hog returned")
end)
"#,
    );
    let names: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    for n in &names {
        write(dir.path(), &format!("{n}.lua"), &marker(n));
    }
    // (A limit of seconds: on a loaded machine a witness's commit, which the watchdog watches
    // under the same limit, may take longer than 100 ms plus the grace.)
    let limits = "workers = 1\nhandler_timeout_ms = 3000\ninstruction_limit = 100000000000\nmemory_limit_mb = 1024\n";
    let config = config_file(&sim, dir.path(), limits);
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    calls(&sim, &log, &names, 3).await;
    all_saw(&log, &names, 3).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("hogging") && text.contains("script stuck:"), "the hog ran and was declared stuck: {text}");
    assert!(!text.contains("hog returned"), "the witnesses went on while the hog was still in C");
    let (all, workers) = threads(agent.id(), "lua-worker");
    assert_eq!(workers, 1, "the stuck worker was replaced: the pool keeps its size");
    assert_eq!(threads(agent.id(), "lua:hog").1, 1, "the stuck worker is named after its script");
    assert!(all < names.len() + cores(), "{all} threads for {} scripts", names.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_worker_a_script_waiting_on_a_request_lets_the_others_run() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = silent_server().await;
    write(
        dir.path(),
        "waiter.lua",
        &format!(
            "agent.on('audioVideoSession', 'added', function() agent.log.info('waiting') pcall(agent.http.request, {{url = 'http://127.0.0.1:{port}/'}}) agent.log.info('request over') end)\n"
        ),
    );
    let names = vec!["w".to_string()];
    write(dir.path(), "w.lua", &marker("w"));
    let config = config_file(&sim, dir.path(), &format!("workers = 1\nhttp_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 600000\n"));
    let log = dir.path().join("agent.log");
    let _agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    calls(&sim, &log, &names, 2).await;
    all_saw(&log, &names, 2).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("waiting"), "the waiter is in its request: {text}");
    assert!(!text.contains("request over") && !text.contains("script stuck"), "{text}");
}
