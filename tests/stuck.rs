//! A script stuck in C code that no limit can interrupt: the watchdog names it, `/healthz` and
//! `/metrics` show it, the other scripts and the agent carry on, a fixed version gets the
//! events it missed, and shutdown does not wait for it. Also what the process does with a
//! second agent on the same state directory and a database it cannot write.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ucwa_agent::script::ScriptOutput;

/// Sorts two million numbers twice in C: seconds in one stretch where neither the instruction
/// hook nor the time limit runs (a handful of VM instructions in all). `EVENT` is where it runs.
const HOG: &str = r#"
local function hog()
  agent.log.info("hogging")
  local t = table.pack(string.byte(string.rep("\1\2\3\4\5\6\7\8", 62500), 1, -1))
  local n = t.n
  for _ = 1, 2 do table.move(t, 1, n, n + 1); n = n * 2 end
  table.sort(t); table.sort(t)
end
agent.on(EVENT, hog)
agent.on("audioVideoSession", function(e) agent.log.info("stuck saw " .. e.type) end)
"#;

const WITNESS: &str = r#"agent.on("audioVideoSession", function(e) agent.log.info("saw " .. e.type) end)"#;

/// Limits a hog in C can run past (the time limit is short, the others out of the way).
const LIMITS: &str = "handler_timeout_ms = 100\ninstruction_limit = 100000000000\nmemory_limit_mb = 1024\nreload_debounce_ms = 20\n";

fn hog(event: &str) -> String {
    HOG.replace("EVENT", event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_script_is_named_skipped_and_replaced_by_its_fixed_version() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "stuck.lua", &hog(r#""audioVideoSession", "added""#));
    write(dir.path(), "witness.lua", WITNESS);
    // Two more hogs beside it that the limits stop: a timer that is always due and a
    // backtracking pattern on every event.
    write(dir.path(), "timer_hog.lua", "agent.every(10, function() local x = 0 for i = 1, 3e6 do x = x + i end end)\n");
    write(dir.path(), "find_hog.lua", "agent.on('audioVideoSession', function(e) string.find(('a'):rep(40), ('a*'):rep(40) .. 'b') end)\n");
    let extra = format!("{LIMITS}[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    let metrics = agent.metrics.expect("metrics listen");
    let mut witness = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut witness, "witness", 2).await, ["saw added", "saw updated"]);

    let stuck = agent.expect("the watchdog's report", |o| matches!(o, ScriptOutput::Stuck { .. })).await;
    let ScriptOutput::Stuck { script, doing, limit_ms } = stuck else { unreachable!() };
    assert_eq!((script.as_str(), limit_ms), ("stuck", 100));
    assert!(doing.contains("handler for audioVideoSession/added"), "{doing}");

    // The endpoints answer at once while the script's thread is busy, and name it.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let health: serde_json::Value =
        client.get(format!("http://{metrics}/healthz")).send().await.expect("/healthz answers within a second").json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["stuck_scripts"], serde_json::json!(["stuck"]), "{health}");
    let text = client.get(format!("http://{metrics}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("ucwa_script_stuck{script=\"stuck\"} 1"), "{text}");

    // The others go on; the stuck script is not fed.
    sim.end_call(call);
    assert_eq!(messages_of(&mut witness, "witness", 1).await, ["saw deleted"]);

    // The fixed version starts on a new thread and gets what the stuck one never finished.
    let mut fixed = agent.out.resubscribe();
    write(dir.path(), "stuck.lua", &hog(r#""agent", "nothing""#));
    expect(&mut fixed, "the fixed version", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "stuck")).await;
    assert_eq!(messages_of(&mut fixed, "stuck", 3).await, ["stuck saw added", "stuck saw updated", "stuck saw deleted"]);
    let health: serde_json::Value = client.get(format!("http://{metrics}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let started = Instant::now();
    agent.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}

/// `run`, its log to `log` (guarded: a failing test leaves no agent behind).
fn spawn(config: &Path, log: &Path) -> Guarded {
    agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(log).unwrap()).spawn_guarded()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_the_grace_time_whatever_a_script_does() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "stuck.lua", &hog(r#""agent", "signedIn""#));
    let config = config_file(&sim, dir.path(), LIMITS);

    // One signal: the scripts get the documented 5 s, then the process leaves without them.
    let mut agent = spawn(&config, &dir.path().join("first.log"));
    wait_available(&sim).await;
    signal(&agent, "-TERM");
    let (code, took) = exit_within(&mut agent, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(9), "SIGTERM took {took:?}");

    // A second signal, once the first was taken, exits at once.
    let log = dir.path().join("second.log");
    let mut agent = spawn(&config, &log);
    wait_available(&sim).await;
    signal(&agent, "-TERM");
    file_contains(&log, "shutting down").await;
    signal(&agent, "-TERM");
    let (code, took) = exit_within(&mut agent, Duration::from_secs(20)).await;
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(4), "the second SIGTERM took {took:?} (the grace it skips is 5 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_state_dir_refuses_to_start() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // A fixed metrics port, which the first agent holds: the second says the state folder is
    // in use, not that the port is (its lock is tried before anything listens).
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"127.0.0.1:{}\"\n", free_port()));
    let mut first = spawn(&config, &dir.path().join("first.log"));
    wait_available(&sim).await;
    let second = output_within(&mut agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]), PATIENCE).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    let state = dir.path().join(".state");
    assert!(stderr.contains(&state.display().to_string()) && stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    signal(&first, "-TERM");
    exit_within(&mut first, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_account_say_their_polls_are_replaced() {
    // README "Accounts, state and credentials": two state directories, one account: the agents share
    // the application (same endpoint id) and replace each other's pending GETs.
    let sim = start_sim(sim_config()).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = a.path().join("agents.log");
    let file = || std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let mut first = agent_command(&["run", "--config", config_file(&sim, a.path(), "").to_str().unwrap()], &[]).stderr(file()).spawn_guarded();
    wait_available(&sim).await;
    let mut second = agent_command(&["run", "--config", config_file(&sim, b.path(), "").to_str().unwrap()], &[]).stderr(file()).spawn_guarded();
    file_contains(&log, "PGetReplaced").await;
    file_contains(&log, "another client may be using this application").await;
    eventually("the simulator counts replaced polls", || sim.counters()["pget_replaced"].as_u64().unwrap() > 0).await;
    for agent in [&mut first, &mut second] {
        signal(agent, "-TERM");
        exit_within(agent, Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_written_stops_the_agent_at_start() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&sim, dir.path(), "");
    let state = dir.path().join(".state");
    drop(ucwa_agent::store::Store::open(&state).unwrap());
    let db = state.join("agent.db");
    // Read-only even for root where the file system allows it (chattr +i); else by mode; and
    // where neither stops this process (root without CAP_LINUX_IMMUTABLE), the database is
    // /dev/full, which nobody can write to (every write fails: "disk full"). Never skipped.
    let immutable = Command::new("chattr").arg("+i").arg(&db).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !immutable {
        let mut perms = std::fs::metadata(&db).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&db, perms).unwrap();
        if std::fs::OpenOptions::new().append(true).open(&db).is_ok() {
            std::fs::remove_file(&db).unwrap();
            std::os::unix::fs::symlink("/dev/full", &db).unwrap();
        }
    }
    let out = output_within(&mut agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]), PATIENCE).await;
    if immutable {
        let _ = Command::new("chattr").arg("-i").arg(&db).status();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "the database is named: {stderr}");
    assert_eq!(sim.counters()["applications_created"], 0, "it stopped before signing in");
}

#[test]
fn check_gives_up_on_a_top_level_stuck_in_c() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/stuck.lua"), HOG.replace("agent.on(EVENT, hog)", "hog()")).unwrap();
    std::fs::write(dir.path().join("scripts/fine.lua"), "agent.on('me', function() end)\n").unwrap();
    std::fs::write(dir.path().join("config.toml"), format!("[scripts]\ndir = \"scripts\"\n{LIMITS}")).unwrap();
    let started = Instant::now();
    let out = output_bounded(Command::new(env!("CARGO_BIN_EXE_ucwa-agent")).arg("check").current_dir(dir.path()), PATIENCE);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("stuck.lua") && text.contains("did not return within 1100 ms"), "{text}");
    assert!(text.contains("ok: fine"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30), "check took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_saved_while_the_call_still_hangs_starts_once_the_script_is_stuck() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "stuck.lua", &hog(r#""audioVideoSession", "added""#));
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), LIMITS)).await;
    let mut out = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    // The hog has started (the handler for `added` runs before the logging one); save the fix
    // at once, before the watchdog's verdict: it waits in the busy thread's inbox.
    expect(&mut out, "the hog running", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "stuck" && message == "hogging")).await;
    write(dir.path(), "stuck.lua", &hog(r#""agent", "nothing""#));
    expect(&mut out, "version 2 built", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "stuck")).await;
    expect(&mut out, "the watchdog's report", |o| matches!(o, ScriptOutput::Stuck { script, .. } if script == "stuck")).await;
    // The host loads the file again on a new thread: it gets the events the hog never finished.
    expect(&mut out, "version 3 on a new thread", |o| matches!(o, ScriptOutput::Loaded { script, version: 3 } if script == "stuck")).await;
    assert_eq!(messages_of(&mut out, "stuck", 2).await, ["stuck saw added", "stuck saw updated"]);
    sim.end_call(call);
    assert_eq!(messages_of(&mut out, "stuck", 1).await, ["stuck saw deleted"]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ends_with_an_error_when_a_script_gets_stuck() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/stuck.lua"), hog(r#""audioVideoInvitation""#)).unwrap();
    std::fs::write(dir.path().join("config.toml"), format!("[scripts]\ndir = \"scripts\"\n{LIMITS}")).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let mut child =
        agent_command(&["replay", samples.to_str().unwrap()], &[]).current_dir(dir.path()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn_guarded();
    let (code, _) = exit_within(&mut child, PATIENCE).await;
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("stuck: handler for audioVideoInvitation/started") && text.contains("did not finish"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_load_in_progress_does_not_hold_shutdown() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // A long time limit: the load of a top level stuck in C would be waited for 21 s.
    let config = config_file(&sim, dir.path(), "handler_timeout_ms = 20000\ninstruction_limit = 100000000000\nmemory_limit_mb = 1024\nreload_debounce_ms = 20");
    let log = dir.path().join("agent.log");
    let mut agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    std::fs::write(dir.path().join("loading.lua"), HOG.replace("agent.on(EVENT, hog)", "for _ = 1, 50 do hog() end")).unwrap();
    file_contains(&log, "hogging").await; // the load's top level is running
    signal(&agent, "-TERM");
    let (code, took) = exit_within(&mut agent, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?} with a load in progress");
}

/// A loopback port free now (for a binary whose `/healthz` is asked before it says where it listens).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of `family{script="…"}` on the agent's `/metrics` (0 when absent).
async fn script_gauge(client: &reqwest::Client, port: u16, family: &str, script: &str) -> u64 {
    let text = match client.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    let prefix = format!("{family}{{script=\"{script}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Waits until `family{script}` reads `want`.
async fn gauge_reaches(client: &reqwest::Client, port: u16, family: &str, script: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = script_gauge(client, port, family, script).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{family}{{script={script:?}}} stayed {v}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process's threads named `name` (a script's thread is `lua:<script>`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)).count())
        .unwrap_or(0)
}

/// One version of `stuck.lua` that hogs `rounds` times (about 5 s of CPU each) on `signedIn`.
fn hog_on_sign_in(rounds: u32) -> String {
    HOG.replace("agent.on(EVENT, hog)", &format!("agent.on('agent', 'signedIn', function() for _ = 1, {rounds} do hog() end end)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_two_versions_are_stuck_a_saved_version_waits_for_one_to_return_without_a_thread() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Version 1 hogs four times (about 3 s of CPU each on a fast machine: it must outlast the
    // steps below, then return while the test runs), version 2 for minutes.
    write(dir.path(), "stuck.lua", &hog_on_sign_in(4));
    let config = config_file(&sim, dir.path(), &format!("{LIMITS}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let stuck_lines = || std::fs::read_to_string(&log).unwrap_or_default().matches("script stuck:").count();
    eventually("version 1 stuck", || stuck_lines() == 1).await;
    write(dir.path(), "stuck.lua", &hog_on_sign_in(100));
    // Version 2 starts (a stuck worker is replaced and named after the script), gets the signedIn version 1 never finished, and is stuck too.
    eventually("version 2 stuck", || stuck_lines() == 2).await;
    assert_eq!(threads_named(agent.id(), "lua:stuck"), 2);

    // Version 3 is fine, but waits: no third thread while two are stuck.
    write(dir.path(), "stuck.lua", "agent.on('agent', 'signedIn', function() agent.log.info('version 3 runs') end)\n");
    tokio::time::sleep(Duration::from_secs(1)).await; // the debounce and a load, many times over
    assert_eq!(threads_named(agent.id(), "lua:stuck"), 2, "no thread for the waiting version");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("version 3 runs"));
    assert_eq!(script_gauge(&client, port, "ucwa_script_stuck_versions", "stuck").await, 2);
    assert_eq!(script_gauge(&client, port, "ucwa_script_waiting", "stuck").await, 1);
    let health: serde_json::Value = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["stuck_versions"]["stuck"], 2, "{health}");
    assert!(health["warnings"].to_string().contains("script stuck: its new version waits until one of its 2 stuck versions returns"), "{health}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("new version of the script not started yet: 2 of its versions are stuck"), "{text}");
    assert_eq!(threads_named(agent.id(), "lua:stuck"), 2, "no thread for the waiting version");
    assert!(!text.contains("version 3 runs"), "{text}");

    // Version 1's call returns at last: its thread ends and version 3 starts in its place, with
    // the events the stuck versions never finished.
    file_contains(&log, "version 3 runs").await;
    assert_eq!(script_gauge(&client, port, "ucwa_script_waiting", "stuck").await, 0);
    assert_eq!(script_gauge(&client, port, "ucwa_script_stuck_versions", "stuck").await, 1);
    // Version 1's thread leaves just after it lets version 3 start (on the pool's workers: a
    // thread is named after a script only while the script holds it stuck).
    eventually("the thread of version 2 (stuck) alone", || threads_named(agent.id(), "lua:stuck") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_restart_an_unchanged_stuck_script() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write(dir.path(), "stuck.lua", &hog_on_sign_in(100));
    let config = config_file(&sim, dir.path(), &format!("{LIMITS}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    gauge_reaches(&client, port, "ucwa_script_stuck", "stuck", 1).await;
    signal(&agent, "-HUP");
    file_contains(&log, "configuration reloaded").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("script loaded").count(), 1, "loaded once, not again by SIGHUP: {text}");
    assert_eq!(threads_named(agent.id(), "lua:stuck"), 1);
    assert_eq!(script_gauge(&client, port, "ucwa_script_stuck_versions", "stuck").await, 1);
    let health: serde_json::Value = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["stuck_scripts"], serde_json::json!(["stuck"]), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_accounts_sharing_a_hanging_top_level_start_in_about_one_time_limit_with_healthz_up_first() {
    let dir = tempfile::tempdir().unwrap();
    // The top level hogs seconds of CPU: each load is given up after 3 s + 1 s.
    write(dir.path(), "hang.lua", &HOG.replace("agent.on(EVENT, hog)", "hog()"));
    let port = free_port();
    let accounts: String = ["a", "b", "c", "d"].iter().map(|n| format!("[[account]]\nname = \"{n}\"\n")).collect();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = \"{}\"\n[scripts]\ndir = \"{}\"\nhandler_timeout_ms = 3000\ninstruction_limit = 100000000000\nmemory_limit_mb = 1024\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n{accounts}",
            dir.path().join(".state").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let one_load = Duration::from_secs(4);
    let started = Instant::now();
    let _agent = agent_command(&["run", "--config", path.to_str().unwrap()], &[]).stderr(Stdio::null()).spawn_guarded();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let mut first: Option<(Duration, u16, serde_json::Value)> = None;
    let ok = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no 200 from /healthz in 60 s; first answer {first:?}");
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            first.get_or_insert((started.elapsed(), code, body));
            if code == 200 {
                break started.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (at, code, body) = first.unwrap();
    assert!(at < one_load && code == 503 && body["state"] == "starting", "/healthz first answered at {at:?}: {code} {body}");
    assert!(ok < one_load.mul_f32(2.5), "every account polled after {ok:?}: the loads ran one after another (one takes {one_load:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_top_level_holds_up_no_other_reload_and_is_not_loaded_again_until_it_changes() {
    use ucwa_agent::script::{Limits, ScriptEnv, ScriptHost, ScriptSettings};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "other.lua", "agent.on('me', function() end)\n");
    let limits = Limits { memory_bytes: 1 << 30, instructions: 100_000_000_000, handler_timeout: Duration::from_secs(3) };
    let store = std::sync::Arc::new(ucwa_agent::store::Store::in_memory());
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(ScriptSettings::new(limits), store));
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let _watch = ucwa_agent::script::watch_dir(host.clone(), Duration::from_millis(20)).unwrap();
    // The hog's top level takes seconds of CPU (four hogs: longer than 3 s + 1 s on a fast
    // machine too); its load is given up after 3 s + 1 s.
    write(dir.path(), "hang.lua", &HOG.replace("agent.on(EVENT, hog)", "for _ = 1, 4 do hog() end"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    write(dir.path(), "other.lua", "agent.on('me', function() end) -- v2\n");
    // Other's new version comes first, not after the hanging load is given up (at 4 s).
    let first = expect(&mut out, "other.lua v2 or the hanging load given up", |o| {
        matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "other")
            || matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "hang")
    })
    .await;
    assert!(matches!(&first, ScriptOutput::Loaded { script, .. } if script == "other"), "other.lua waited behind the hanging load: {first:?}");
    let failed = expect(&mut out, "the hanging load given up", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "hang")).await;
    let ScriptOutput::LoadFailed { error, .. } = failed else { unreachable!() };
    assert!(error.contains("did not return within 4000 ms") && error.contains("until the file changes"), "{error}");

    // A rescan (SIGHUP) leaves the unchanged file alone: no second thread stuck, no wait.
    // (The rescan awaits the loads it starts: a load of the hanging file would end, given up,
    // with a LoadFailed before it returns.)
    host.rescan().await;
    let since: Vec<ScriptOutput> = std::iter::from_fn(|| out.try_recv().ok()).collect();
    assert!(!since.iter().any(|o| matches!(o, ScriptOutput::LoadFailed { script, .. } | ScriptOutput::Loaded { script, .. } if script == "hang")), "{since:?}");
    // Its next change loads it.
    write(dir.path(), "hang.lua", "agent.on('me', function() end)\n");
    expect(&mut out, "hang.lua fixed", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "hang")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hanging_top_levels_of_a_script_make_its_next_save_wait_for_one_of_them() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write(dir.path(), "hang.lua", "agent.on('me', function() end)\n");
    let config = config_file(&sim, dir.path(), &format!("{LIMITS}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    // Two saves whose top level hogs (four hogs, seconds of CPU each even on a fast machine:
    // longer than the steps below): each load is given up after 1.1 s and leaves its thread
    // behind; the version that runs keeps running.
    for (i, text) in ["for _ = 1, 4 do hog() end", "for _ = 1, 4 do hog() end -- again"].into_iter().enumerate() {
        write(dir.path(), "hang.lua", &HOG.replace("agent.on(EVENT, hog)", text));
        eventually("the load given up", || lines().matches("did not return within 1100 ms").count() == i + 1).await;
    }
    assert_eq!(threads_named(agent.id(), "lua-load:hang"), 2);
    // The third save is not loaded (no third thread that could hang) until one of them returns.
    write(dir.path(), "hang.lua", "agent.on('me', function() end) -- fixed\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(threads_named(agent.id(), "lua-load:hang"), 2, "no thread for the third version yet");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    assert_eq!(script_gauge(&client, port, "ucwa_script_waiting", "hang").await, 1);
    assert!(lines().contains("new version of the script not started yet: 2 of its versions are stuck"), "{}", lines());
    eventually("the fixed version loaded", || lines().matches("script loaded").count() == 2).await;
    assert_eq!(script_gauge(&client, port, "ucwa_script_waiting", "hang").await, 0);
}

/// Review of 2026-12-04, missing test 8: the watchdog covers every call site in `run`: a timer
/// and an `on_unload` stuck in C are declared stuck (a fixed or new version takes over), and a
/// top level stuck in C is a load failure while the old version keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_an_on_unload_and_a_top_level_stuck_in_c_are_each_caught() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "timer.lua", &HOG.replace("agent.on(EVENT, hog)", "agent.on('agent', 'signedIn', function() agent.after(10, hog) end)"));
    write(
        dir.path(),
        "leaving.lua",
        &HOG.replace("agent.on(EVENT, hog)", "agent.on_unload(hog)\nagent.on('audioVideoSession', 'added', function() agent.log.info('leaving v1') end)"),
    );
    write(dir.path(), "loading.lua", "agent.on('audioVideoSession', 'added', function() agent.log.info('loading v1') end)\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), LIMITS)).await;
    let stuck = agent.expect("the timer stuck", |o| matches!(o, ScriptOutput::Stuck { script, .. } if script == "timer")).await;
    assert!(matches!(&stuck, ScriptOutput::Stuck { doing, limit_ms: 100, .. } if doing == "timer"), "{stuck:?}");

    // A new version of `leaving`: the old one's on_unload hogs, is declared stuck, and the new
    // version starts on a thread of its own.
    let mut out = agent.out.resubscribe();
    write(dir.path(), "leaving.lua", "agent.on('audioVideoSession', 'added', function() agent.log.info('leaving v2') end)\n");
    let stuck = expect(&mut out, "on_unload stuck", |o| matches!(o, ScriptOutput::Stuck { script, .. } if script == "leaving")).await;
    assert!(matches!(&stuck, ScriptOutput::Stuck { doing, .. } if doing == "on_unload"), "{stuck:?}");
    expect(&mut out, "leaving's new version", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "leaving")).await;

    // A version of `loading` whose top level hogs: not loaded, and version 1 runs on.
    write(dir.path(), "loading.lua", &HOG.replace("agent.on(EVENT, hog)", "hog()"));
    let failed = expect(&mut out, "the load given up", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "loading")).await;
    assert!(matches!(&failed, ScriptOutput::LoadFailed { error, .. } if error.contains("the top level did not return within 1100 ms")), "{failed:?}");
    let (mut leaving, mut loading) = (agent.out.resubscribe(), agent.out.resubscribe());
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut leaving, "leaving", 1).await, ["leaving v2"]);
    assert_eq!(messages_of(&mut loading, "loading", 1).await, ["loading v1"]);
    sim.end_call(call);
    agent.stop().await;
}

/// Review of 2026-12-04, missing test 1 (the commit gate): a stuck call that returns after its
/// replacement took over writes nothing; the database keeps the replacement's `agent.state`
/// and cursor, and a restart delivers nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_that_returns_late_commits_nothing() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "stuck.lua",
        &HOG.replace(
            "agent.on(EVENT, hog)",
            "agent.on('audioVideoSession', 'added', function()\n  agent.state.who = 'v1 before'\n  hog()\n  agent.state.who = 'v1 after the hog'\n  agent.state.seen = {0}\n  agent.log.info('v1 returned')\nend)",
        ),
    );
    let config = config_text(&sim, dir.path(), &format!("{LIMITS}[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let mut agent = start_agent(&sim, &config).await;
    let port = agent.metrics.expect("metrics listen").port();
    let mut v1 = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    agent.expect("the watchdog's report", |o| matches!(o, ScriptOutput::Stuck { script, .. } if script == "stuck")).await;

    // The fix takes over and gets the events the stuck call never finished.
    let fixed = "agent.on('audioVideoSession', function(e)\n  agent.state.who = 'v2'\n  agent.state.seen = agent.state.seen or {}\n  \
                 table.insert(agent.state.seen, e.seq)\n  agent.log.info('v2 saw ' .. e.type)\nend)\n";
    let mut v2 = agent.out.resubscribe();
    write(dir.path(), "stuck.lua", fixed);
    assert_eq!(v2_lines(&mut v2, 2).await, ["v2 saw added", "v2 saw updated"]);
    // The hog returns at last, on its old thread, and tries to commit what it changed.
    expect(&mut v1, "the stuck call returning", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "stuck" && message == "v1 returned"))
        .await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    gauge_reaches(&client, port, "ucwa_script_stuck_versions", "stuck", 0).await; // its thread has ended
    sim.end_call(call);
    assert_eq!(v2_lines(&mut v2, 1).await, ["v2 saw deleted"]);
    agent.stop().await;
    let db = dir.path().join(".state/agent.db");
    let state = saved_state(&db, "stuck");
    assert_eq!(state["who"], "v2", "the late call wrote nothing: {state}");
    let seen: Vec<u64> = serde_json::from_value(state["seen"].clone()).unwrap();
    assert_eq!(seen.len(), 3, "{state}");

    // A restart delivers nothing again: the cursor is the replacement's.
    let agent = start_agent(&sim, &config).await;
    let mut out = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut out, "stuck", 1).await, ["v2 saw added"]);
    sim.end_call(call);
    expect(&mut out, "the call's end", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "stuck" && message == "v2 saw deleted")).await;
    agent.stop().await;
    let seen: Vec<u64> = serde_json::from_value(saved_state(&db, "stuck")["seen"].clone()).unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "each event once, in order: {seen:?}");
}

/// The next `n` lines of the fixed version of `stuck` (the stuck one's own may come between).
async fn v2_lines(out: &mut tokio::sync::broadcast::Receiver<ScriptOutput>, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    while lines.len() < n {
        let o =
            expect(out, "a line of version 2", |o| matches!(o, ScriptOutput::Log { script, message, .. } if script == "stuck" && message.starts_with("v2 ")))
                .await;
        if let ScriptOutput::Log { message, .. } = o {
            lines.push(message);
        }
    }
    lines
}

/// `script` (as `s`) on a host of its own with 100 traces kept and a handler time limit of
/// `timeout_ms`: the host, its output, its store.
async fn traced_host(
    script: &str,
    timeout_ms: u64,
) -> (ucwa_agent::script::ScriptHost, tokio::sync::broadcast::Receiver<ScriptOutput>, std::sync::Arc<ucwa_agent::store::Store>, tempfile::TempDir) {
    use ucwa_agent::script::{Limits, ScriptEnv, ScriptHost, ScriptSettings};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.lua", script);
    let limits = Limits { memory_bytes: 1 << 30, instructions: 100_000_000_000, handler_timeout: Duration::from_millis(timeout_ms) };
    let store = std::sync::Arc::new(ucwa_agent::store::Store::in_memory());
    let settings = ScriptSettings { traces_per_script: 100, ..ScriptSettings::new(limits) };
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(settings, store.clone()));
    let out = host.subscribe();
    host.load_dir().await.unwrap();
    (host, out, store, dir)
}

/// The cursor and the traces of the events before it are written together: once a script is
/// stuck nothing more of it is written, and the events the cursor has passed are never run
/// again, so a trace not written with the cursor is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_a_stuck_script_finished_before_it_hung_all_have_their_traces() {
    use ucwa_agent::store::TraceQuery;
    // Events 1 to 4 keep their handler about 12 ms each (a commit is due after every second
    // one); event 5 hogs in C.
    let script = HOG.replace("agent.on(EVENT, hog)", "")
        + r#"
agent.on("audioVideoSession", function(e)
  if e.seq == 5 then hog() return end
  local t0 = os.clock()
  while os.clock() - t0 < 0.012 do end
end)
"#;
    let (host, mut out, store, _dir) = traced_host(&script, 300).await;
    host.dispatch(events(1, 5));
    expect(&mut out, "the watchdog's report", |o| matches!(o, ScriptOutput::Stuck { script, .. } if script == "s")).await;
    let cursor = store.cursor("s").unwrap().unwrap_or(0);
    let q = TraceQuery { script: Some("s".into()), limit: 100, ..Default::default() };
    let traced: std::collections::BTreeSet<u64> =
        store.traces(&q).unwrap().iter().filter_map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["event"]["seq"].as_u64()).collect();
    assert!(cursor >= 2, "the events before the hog were committed: cursor {cursor}");
    let missing: Vec<u64> = (1..=cursor).filter(|s| !traced.contains(s)).collect();
    assert!(missing.is_empty(), "cursor {cursor}, yet no trace of the events {missing:?} (traces of {traced:?})");
    host.shutdown(Duration::from_secs(1)).await;
}

/// The host writes a stuck script's held traces on the watchdog's thread while the stuck call
/// still holds the script's Lua state: letting go there of the last reference to a handler the
/// script removed (`:off()`) waits for that state, that is for the stuck call to return. The
/// report of a stuck script must not wait for what it is stuck in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_stuck_after_removing_handlers_in_a_burst_is_reported_while_still_stuck() {
    // Events of about 3 ms each: the burst's first commit writes its traces, the next ones
    // hold theirs back (for 100 ms); each event removes the handler the one before added, so a
    // held trace is the last to refer to it. Event 12 hogs in C.
    let script = HOG.replace("agent.on(EVENT, hog)", "")
        + r#"
local other = agent.on("message", function() end)
agent.on("audioVideoSession", function(e)
  if e.seq == 12 then hog() agent.log.info("hog returned") return end
  other:off()
  other = agent.on("message", function() end)
  local t0 = os.clock()
  while os.clock() - t0 < 0.003 do end
end)
"#;
    let (host, mut out, _store, _dir) = traced_host(&script, 100).await;
    host.dispatch(events(1, 12));
    let first = expect(&mut out, "the watchdog's report or the hog's return", |o| {
        matches!(o, ScriptOutput::Stuck { script, .. } if script == "s") || matches!(o, ScriptOutput::Log { message, .. } if message == "hog returned")
    })
    .await;
    assert!(matches!(first, ScriptOutput::Stuck { .. }), "the hog returned before the script was reported stuck: {first:?}");
    host.shutdown(Duration::from_secs(1)).await;
}
