//! Many accounts in one agent: each account's scripts see only that account's events, once
//! and in order, whatever happens to another account; SIGHUP adds and removes accounts; one
//! account refused leaves the others running.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use tokio::sync::{broadcast, oneshot};
use ucwa_agent::agent::{Agent, RunEnd};
use ucwa_agent::config::Config;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{CallSpec, Fault, SimConfig, Simulator};

const RECEPTION: &str = "reception@contoso.com";
const HELPDESK: &str = "helpdesk@contoso.com";

/// Records every channel event (seq and href) and says which account it serves.
const EVERY_EVENT: &str = r#"
agent.on("*", function(e)
  if e.rel == "agent" then
    if e.type == "signedIn" then agent.log.info("serving " .. agent.account.name .. " " .. tostring(agent.account.uri)) end
    return
  end
  agent.state.seqs = agent.state.seqs or {}
  table.insert(agent.state.seqs, e.seq)
  agent.state.hrefs = agent.state.hrefs or {}
  table.insert(agent.state.hrefs, e.href)
  if e.rel == "audioVideoSession" and e.type == "added" then agent.log.info("call up") end
  if e.rel == "audioVideoSession" and e.type == "deleted" then agent.log.info("call over") end
end)
"#;

fn two_users() -> SimConfig {
    SimConfig { users: vec![(RECEPTION.into(), "demo".into()), (HELPDESK.into(), "demo".into())], ..sim_config() }
}

/// An `[[account]]` on `sim` signing in as `user` with the password in `password_env`.
fn account(sim: &Simulator, name: &str, user: &str, password_env: &str) -> String {
    format!(
        "[[account]]\nname = \"{name}\"\ndiscover = \"{}\"\n[account.auth]\nkind = \"password\"\nusername = \"{user}\"\npassword_env = \"{password_env}\"\n",
        sim.discovery_url()
    )
}

fn config(dir: &Path, accounts: &str, extra: &str) -> String {
    format!(
        "[server]\nmax_backoff_secs = 1\n[state]\ndir = \"{}\"\n[scripts]\ndir = \"{}\"\nreload_debounce_ms = 10\n{extra}\n{accounts}",
        dir.join(".state").display(),
        dir.display()
    )
}

/// An agent running in this process, with the output of each account's scripts.
struct Fleet {
    outputs: std::collections::BTreeMap<String, broadcast::Receiver<ScriptOutput>>,
    reloader: ucwa_agent::agent::Reloader,
    metrics: Option<std::net::SocketAddr>,
    agent: ucwa_agent::agent::Agent,
}

impl Fleet {
    async fn start(config: Config, names: &[&str]) -> Fleet {
        std::env::set_var(PASSWORD_ENV, "demo");
        let agent = Agent::start(config).await.expect("the agent starts");
        let outputs = names.iter().map(|n| (n.to_string(), agent.account_scripts(n).expect("the account runs").subscribe())).collect();
        Fleet { outputs, reloader: agent.reloader(), metrics: agent.metrics_addr(), agent }
    }

    /// Runs the agent; the sender stops it, the handle gives how it ended.
    fn run(self) -> (Outputs, oneshot::Sender<()>, tokio::task::JoinHandle<RunEnd>) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.agent.run(async {
            let _ = stopped.await;
        }));
        (Outputs { outputs: self.outputs, reloader: self.reloader, metrics: self.metrics }, stop, task)
    }
}

struct Outputs {
    outputs: std::collections::BTreeMap<String, broadcast::Receiver<ScriptOutput>>,
    reloader: ucwa_agent::agent::Reloader,
    metrics: Option<std::net::SocketAddr>,
}

impl Outputs {
    async fn messages(&mut self, account: &str, script: &str, n: usize) -> Vec<String> {
        messages_of(self.outputs.get_mut(account).expect("subscribed to the account"), script, n).await
    }
}

async fn stop(stop: oneshot::Sender<()>, task: tokio::task::JoinHandle<RunEnd>) -> RunEnd {
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, task).await.expect("the agent stops").expect("the agent task ends")
}

/// The simulator's applications, as its control API lists them.
async fn apps(sim: &Simulator) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/sim/v1/applications", sim.origin())).await.unwrap().json().await.unwrap();
    v.as_array().unwrap().clone()
}

/// Waits until `user` has an application that is available with its P-GET parked; its id.
async fn available(sim: &Simulator, user: &str) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let found = apps(sim).await.into_iter().find(|a| a["user"] == user && a["available"] == true && a["pollParked"] == true);
        if let Some(a) = found {
            return a["id"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{user} never became available: {:?}", apps(sim).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn call_for(user: &str) -> CallSpec {
    CallSpec { user: Some(user.into()), ..answered_call() }
}

/// One call to each account, ended, seen to its end by each account's script.
async fn a_call_each(sim: &Simulator, out: &mut Outputs) {
    let r = sim.start_call(call_for(RECEPTION)).unwrap();
    let h = sim.start_call(call_for(HELPDESK)).unwrap();
    // Connected before ended, so both see a whole call.
    for account in ["reception", "helpdesk"] {
        wait_line(out, account, "call up").await;
    }
    sim.end_call(r);
    sim.end_call(h);
    for account in ["reception", "helpdesk"] {
        wait_line(out, account, "call over").await;
    }
}

/// Waits for the line `message` of the script `all` of `account` (earlier lines are dropped).
async fn wait_line(out: &mut Outputs, account: &str, message: &str) {
    let rx = out.outputs.get_mut(account).unwrap();
    expect(rx, &format!("{account}: {message}"), |o| matches!(o, ScriptOutput::Log { script, message: m, .. } if script == "all" && m == message)).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_sees_only_its_own_events_once_in_order_with_faults_on_one_and_a_restart() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    let accounts = format!("{}{}", account(&sim, "reception", RECEPTION, PASSWORD_ENV), account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV));
    let text = config(dir.path(), &accounts, "");
    let parse = || Config::parse(&text, Path::new("test-config.toml")).unwrap();

    let (mut out, stopper, task) = Fleet::start(parse(), &["reception", "helpdesk"]).await.run();
    assert_eq!(out.messages("reception", "all", 1).await, ["serving reception sip:reception@contoso.com"]);
    assert_eq!(out.messages("helpdesk", "all", 1).await, ["serving helpdesk sip:helpdesk@contoso.com"]);
    let helpdesk_app = available(&sim, HELPDESK).await;
    available(&sim, RECEPTION).await;
    // Faults on the reception's channel only.
    sim.inject_for(RECEPTION, Fault::ServerError { status: 503, retry_after: None }, 2);
    sim.inject_for(RECEPTION, Fault::DropConnection, 1);
    a_call_each(&sim, &mut out).await;
    sim.inject_for(RECEPTION, Fault::ApplicationGone, 1);
    available(&sim, RECEPTION).await;
    available(&sim, HELPDESK).await;
    a_call_each(&sim, &mut out).await;
    assert_eq!(available(&sim, HELPDESK).await, helpdesk_app, "the helpdesk kept its application through the reception's faults");
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped);

    // Restarted: each account resumes from its own state.
    let (mut out, stopper, task) = Fleet::start(parse(), &["reception", "helpdesk"]).await.run();
    available(&sim, RECEPTION).await;
    available(&sim, HELPDESK).await;
    a_call_each(&sim, &mut out).await;
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped);

    let sent = sim.counters()["events_by_user"].clone();
    let mut hrefs_of = Vec::new();
    for (name, user) in [("reception", RECEPTION), ("helpdesk", HELPDESK)] {
        let state = saved_state(&dir.path().join(format!(".state/{name}/agent.db")), "all");
        let seqs: Vec<u64> = state["seqs"].as_array().expect("seqs recorded").iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name}: in order, no repeats: {seqs:?}");
        assert_eq!(seqs.len() as u64, sent[user].as_u64().unwrap(), "{name} saw every event sent to it, once, and nothing else: {sent}");
        let hrefs: std::collections::BTreeSet<String> = state["hrefs"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
        hrefs_of.push(hrefs);
    }
    assert!(hrefs_of[0].is_disjoint(&hrefs_of[1]), "no event of one account reached the other");
    assert!(sim.counters()["faults_applied"].as_u64() >= Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_accounts_without_touching_the_others() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    let path = dir.path().join("agent.toml");
    let reception = account(&sim, "reception", RECEPTION, PASSWORD_ENV);
    let helpdesk = account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV);
    std::fs::write(&path, config(dir.path(), &reception, "[metrics]\nlisten = \"127.0.0.1:0\"")).unwrap();
    let fleet = Fleet::start(Config::load(&path).unwrap(), &["reception"]).await;
    assert!(fleet.agent.account_scripts("helpdesk").is_none());
    let (out, stopper, task) = fleet.run();
    let reception_app = available(&sim, RECEPTION).await;

    // Added: the helpdesk signs in; the reception keeps its application.
    std::fs::write(&path, config(dir.path(), &format!("{reception}{helpdesk}"), "[metrics]\nlisten = \"127.0.0.1:0\"")).unwrap();
    let _ = out.reloader.reload().await;
    let helpdesk_app = available(&sim, HELPDESK).await;
    assert_eq!(available(&sim, RECEPTION).await, reception_app, "the reception was not touched");
    assert_eq!(sim.counters()["applications_created"], 2);
    let health: Value = reqwest::get(format!("http://{}/healthz", out.metrics.unwrap())).await.unwrap().json().await.unwrap();
    assert_eq!(health["accounts"].as_object().map(|a| a.len()), Some(2), "{health}");

    // A change that cannot work (a password variable this process does not have): the
    // account keeps running as it was.
    let broken = reception.replace(PASSWORD_ENV, "UCWA_AGENT_TEST_NEVER_SET");
    std::fs::write(&path, config(dir.path(), &format!("{broken}{helpdesk}"), "[metrics]\nlisten = \"127.0.0.1:0\"")).unwrap();
    let _ = out.reloader.reload().await;
    assert_eq!(available(&sim, RECEPTION).await, reception_app, "the reception kept running as it was");
    assert_eq!(sim.counters()["applications_deleted"], 0);

    // Removed: the reception's application is deleted; the helpdesk goes on.
    std::fs::write(&path, config(dir.path(), &helpdesk, "[metrics]\nlisten = \"127.0.0.1:0\"")).unwrap();
    let _ = out.reloader.reload().await;
    eventually("the reception's application deleted", || sim.counters()["applications_deleted"] == 1).await;
    assert!(apps(&sim).await.iter().all(|a| a["user"] != RECEPTION));
    assert_eq!(available(&sim, HELPDESK).await, helpdesk_app, "the helpdesk was not touched");
    let metrics = reqwest::get(format!("http://{}/metrics", out.metrics.unwrap())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ucwa_up{account=\"helpdesk\"} 1") && !metrics.contains("account=\"reception\""), "{metrics}");
    assert_eq!(reqwest::get(format!("http://{}/healthz/helpdesk", out.metrics.unwrap())).await.unwrap().status(), 200);
    // The helpdesk's scripts (started by the reload) run its calls.
    let c = sim.start_call(call_for(HELPDESK)).unwrap();
    eventually("the helpdesk's script saw the call", || {
        saved_state(&dir.path().join(".state/helpdesk/agent.db"), "all")["seqs"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    sim.end_call(c);
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_refused_stops_alone_and_health_says_which() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    std::env::set_var("UCWA_AGENT_TEST_WRONG_PASSWORD", "wrong");
    let accounts = format!("{}{}", account(&sim, "reception", RECEPTION, "UCWA_AGENT_TEST_WRONG_PASSWORD"), account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV));
    let text = config(dir.path(), &accounts, "[metrics]\nlisten = \"127.0.0.1:0\"");
    let (mut out, stopper, task) = Fleet::start(Config::parse(&text, Path::new("t.toml")).unwrap(), &["reception", "helpdesk"]).await.run();
    available(&sim, HELPDESK).await;
    let addr = out.metrics.unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let health = loop {
        let h: Value = reqwest::get(format!("http://{addr}/healthz")).await.unwrap().json().await.unwrap();
        if h["accounts"]["reception"]["state"] == "stopped" {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "the reception never stopped: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(sim.counters()["token_rejections"], 3, "three tries, no more");
    assert_eq!(health["status"], "unavailable", "{health}");
    assert_eq!(health["accounts_not_polling"], serde_json::json!(["reception"]));
    assert!(health["accounts"]["reception"]["last_error"].as_str().unwrap().contains("credentials refused"), "{health}");
    assert_eq!(reqwest::get(format!("http://{addr}/healthz")).await.unwrap().status(), 503);
    assert_eq!(reqwest::get(format!("http://{addr}/healthz/helpdesk")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("http://{addr}/healthz/reception")).await.unwrap().status(), 503);
    assert_eq!(reqwest::get(format!("http://{addr}/healthz/nobody")).await.unwrap().status(), 404);
    // The helpdesk goes on.
    let c = sim.start_call(call_for(HELPDESK)).unwrap();
    wait_line(&mut out, "helpdesk", "call up").await;
    sim.end_call(c);
    wait_line(&mut out, "helpdesk", "call over").await;
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped, "one account refused of two: not the agent's end");
}

/// The demo with two accounts: the embedded simulator serves both users, its generator calls
/// each in turn, and every log line of an account's scripts names the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_demo_serves_two_accounts_and_log_lines_name_them() {
    let dir = tempfile::tempdir().unwrap();
    // At `warn` (the filter below lets nothing else through), the lines still name the account.
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.warn('call for ' .. agent.account.name) end)\n");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = \"{}\"\n[scripts]\ndir = \"{}\"\n[simulator]\ncalls_per_minute = 300\nring_secs = 0.1\ncall_duration_secs = 0.3\n\
             [[account]]\nname = \"reception\"\n[[account]]\nname = \"helpdesk\"\n",
            dir.path().join(".state").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = agent_command(&["run", "--config", path.to_str().unwrap(), "--log-format", "json"], &[("RUST_LOG", "warn")])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn_guarded();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let both = |l: &str| l.contains(r#""message":"call for reception""#) && l.contains(r#""message":"call for helpdesk""#);
    eventually("calls for both accounts", || both(&lines())).await;
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));
    for line in lines().lines().filter(|l| l.contains("call for")) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["message"].as_str().unwrap(), format!("call for {}", v["account"].as_str().unwrap()), "{line}");
        assert_eq!(v["script"], "calls");
    }
}

/// `check` loads each account's own scripts too; `check --online` walks every account's
/// sign-in and exits with the worst (3: one was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_covers_every_account() {
    // (A variable no test of this process sets: children inherit the process's environment.)
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    std::fs::create_dir(dir.path().join("reception")).unwrap();
    write(&dir.path().join("reception"), "greeting.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('hi') end\n");
    let reception = account(&sim, "reception", RECEPTION, PASSWORD_ENV).replacen("\n", "\nscripts_dir = \"reception\"\n", 1);
    let accounts = format!("{reception}{}", account(&sim, "helpdesk", HELPDESK, "UCWA_AGENT_TEST_CHECK_PASSWORD"));
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(dir.path(), &accounts, "")).unwrap();
    let out = agent_command(&["check", "--config", path.to_str().unwrap()], &[]).stdout(std::process::Stdio::piped()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("`account.helpdesk.auth.password_env`: the environment variable `UCWA_AGENT_TEST_CHECK_PASSWORD` is not set"), "{shown}");
    let with_password = [("UCWA_AGENT_TEST_CHECK_PASSWORD", "wrong")];
    let out = agent_command(&["check", "--config", path.to_str().unwrap()], &with_password).stdout(std::process::Stdio::piped()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("reception/greeting.lua:2: error") && shown.contains("ok: all"), "{shown}");
    std::fs::remove_file(dir.path().join("reception/greeting.lua")).unwrap();
    let online =
        agent_command(&["check", "--online", "--config", path.to_str().unwrap()], &with_password).stdout(std::process::Stdio::piped()).output().unwrap();
    let shown = String::from_utf8_lossy(&online.stdout);
    assert_eq!(online.status.code(), Some(3), "{shown}");
    let reception = shown.find("account reception:").expect("each account is named");
    let helpdesk = shown.find("account helpdesk:").expect("each account is named");
    assert!(shown[reception..helpdesk].contains("online: signed in") && shown[helpdesk..].contains("FAIL token"), "{shown}");
    assert!(shown.contains("online: 1 of 2 accounts signed in"), "{shown}");
    // An account's scripts folder that is not there: `check` and `run` both stop, naming it.
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, config(dir.path(), "[[account]]\nname = \"desk\"\nscripts_dir = \"nope\"\n", "")).unwrap();
    for command in ["check", "run"] {
        let out = output_within(&mut agent_command(&[command, "--config", missing.to_str().unwrap()], &[]), PATIENCE).await;
        let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{command}: {shown}");
        assert!(shown.contains("`account.desk.scripts_dir`: cannot read"), "{command}: {shown}");
    }
    assert!(!dir.path().join(".state/desk").exists(), "nothing was started");
}

/// Review of 2026-12-04, missing test 7: with every account refused, the process exits 3 (with
/// one of two refused it runs on: `an_account_refused_stops_alone_and_health_says_which`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_exits_3_once_every_account_is_refused() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    let wrong = "UCWA_AGENT_TEST_BOTH_WRONG";
    let accounts = format!("{}{}", account(&sim, "reception", RECEPTION, wrong), account(&sim, "helpdesk", HELPDESK, wrong));
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(dir.path(), &accounts, "")).unwrap();
    let out = output_within(&mut agent_command(&["run", "--config", path.to_str().unwrap()], &[(wrong, "wrong")]), PATIENCE).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert_eq!(sim.counters()["token_rejections"], 6, "three tries for each account, no more: {log}");
    assert!(!log.contains("wrong\"") && !log.contains("=wrong"), "the password is not logged: {log}");
}

/// Review of 2026-12-04, missing test 10: an account's own script replaces the shared one of the
/// same name for that account only, and saving a shared script reloads it in every account,
/// each keeping its own `agent.state`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_script_replaces_the_shared_one_and_a_shared_save_reloads_every_account() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("reception-scripts");
    std::fs::create_dir(&own).unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    write(dir.path(), "greet.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('shared greeting') end)\n");
    write(&own, "greet.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('reception greeting') end)\n");
    let count = |v: u32| {
        format!("agent.on('audioVideoSession', 'added', function(e)\n  agent.state.calls = (agent.state.calls or 0) + 1\n  agent.log.info('v{v} calls ' .. agent.state.calls)\nend)\n")
    };
    write(dir.path(), "count.lua", &count(1));
    // (`scripts_dir` belongs to the reception's [[account]], before its [account.auth].)
    let reception =
        account(&sim, "reception", RECEPTION, PASSWORD_ENV).replacen("[account.auth]", &format!("scripts_dir = \"{}\"\n[account.auth]", own.display()), 1);
    let text = config(dir.path(), &format!("{reception}{}", account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV)), "");
    let (mut out, stopper, task) = Fleet::start(Config::parse(&text, Path::new("t.toml")).unwrap(), &["reception", "helpdesk"]).await.run();
    available(&sim, RECEPTION).await;
    available(&sim, HELPDESK).await;
    let lines = |account: &str| out.outputs[account].resubscribe();
    let (mut reception_greet, mut reception_count, mut helpdesk_greet, mut helpdesk_count) =
        (lines("reception"), lines("reception"), lines("helpdesk"), lines("helpdesk"));
    // Two calls to the reception, one to the helpdesk.
    for user in [RECEPTION, RECEPTION, HELPDESK] {
        let c = sim.start_call(call_for(user)).unwrap();
        let account = if user == RECEPTION { "reception" } else { "helpdesk" };
        wait_line(&mut out, account, "call up").await;
        sim.end_call(c);
        wait_line(&mut out, account, "call over").await;
    }
    assert_eq!(messages_of(&mut reception_greet, "greet", 2).await, ["reception greeting", "reception greeting"]);
    assert_eq!(messages_of(&mut helpdesk_greet, "greet", 1).await, ["shared greeting"]);
    assert_eq!(messages_of(&mut reception_count, "count", 2).await, ["v1 calls 1", "v1 calls 2"]);
    assert_eq!(messages_of(&mut helpdesk_count, "count", 1).await, ["v1 calls 1"]);
    // A shared script saved: every account runs the new version, on its own agent.state.
    write(dir.path(), "count.lua", &count(2));
    for account in ["reception", "helpdesk"] {
        let rx = out.outputs.get_mut(account).unwrap();
        expect(rx, &format!("{account}: count v2"), |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "count")).await;
    }
    for (user, account, rx, want) in [(RECEPTION, "reception", &mut reception_count, "v2 calls 3"), (HELPDESK, "helpdesk", &mut helpdesk_count, "v2 calls 2")] {
        let c = sim.start_call(call_for(user)).unwrap();
        assert_eq!(messages_of(rx, "count", 1).await, [want]);
        sim.end_call(c);
        wait_line(&mut out, account, "call over").await;
    }
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped);
}

/// A loopback port free now (for a binary whose `/healthz` is asked before it says where it listens).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `/healthz` of an agent on `port`, once it answers.
async fn health(port: u16) -> (u16, Value) {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            let status = r.status().as_u16();
            return (status, r.json().await.unwrap_or(Value::Null));
        }
        assert!(std::time::Instant::now() < deadline, "nothing answers on {port}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Review of 2026-12-04, missing test 4: `run --shard K/N` on one configuration and one
/// `state.dir` signs in exactly the accounts `shard_of` gives shard K, every account in one
/// shard; a shard with none idles with `/healthz` 200 and starts an account a SIGHUP gives it,
/// on the `--metrics-listen` address it was started with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_sign_in_their_own_accounts_and_an_idle_shard_takes_one_added_by_sighup() {
    use ucwa_agent::config::shard_of;
    const N: u32 = 3;
    let names = ["reception", "helpdesk"];
    let idle = (0..N).find(|k| names.iter().all(|n| shard_of(n, N) != *k)).expect("two accounts leave a shard of three empty");
    let extra_name = (0..).map(|i| format!("extra{i}")).find(|n| shard_of(n, N) == idle).unwrap();
    let extra_user = "extra@contoso.com";
    let sim = start_sim(SimConfig {
        users: vec![(RECEPTION.into(), "demo".into()), (HELPDESK.into(), "demo".into()), (extra_user.into(), "demo".into())],
        ..sim_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.lua", EVERY_EVENT);
    let two = format!("{}{}", account(&sim, "reception", RECEPTION, PASSWORD_ENV), account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV));
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(dir.path(), &two, "")).unwrap();
    let mut shards = Vec::new();
    for k in 0..N {
        let (port, log) = (free_port(), dir.path().join(format!("shard{k}.log")));
        let args = ["run", "--config", path.to_str().unwrap(), "--shard", &format!("{k}/{N}"), "--metrics-listen", &format!("127.0.0.1:{port}")];
        let child = agent_command(&args, &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
        shards.push((k, port, log, child));
    }
    available(&sim, RECEPTION).await;
    available(&sim, HELPDESK).await;
    for (k, port, log, _) in &shards {
        let (status, h) = health(*port).await;
        let text = std::fs::read_to_string(log).unwrap();
        for name in names {
            let mine = shard_of(name, N) == *k;
            assert_eq!(text.contains(&format!("account={name}")), mine, "shard {k} and {name}: {text}");
        }
        if *k == idle {
            assert_eq!(status, 200, "an idle shard is healthy: {h}");
        }
    }
    assert_eq!(apps(&sim).await.len(), 2, "one application per account, no more");

    // A SIGHUP adds an account that falls to the idle shard: it signs it in, and only it.
    let three = format!("{two}{}", account(&sim, &extra_name, extra_user, PASSWORD_ENV));
    std::fs::write(&path, config(dir.path(), &three, "")).unwrap();
    for (_, _, _, child) in &shards {
        signal(child, "-HUP");
    }
    available(&sim, extra_user).await;
    let (_, port, log, _) = &shards[idle as usize];
    file_contains(log, &format!("account={extra_name}")).await;
    let (status, h) = health(*port).await;
    assert_eq!(status, 200, "{h}");
    assert!(h.to_string().contains(&extra_name), "the same address, now with the account: {h}");
    for (k, _, log, _) in &shards {
        if *k != idle {
            assert!(!std::fs::read_to_string(log).unwrap().contains(&format!("account={extra_name}")), "shard {k} left it alone");
        }
    }
    assert_eq!(apps(&sim).await.len(), 3);
    for (_, _, _, child) in &mut shards {
        signal(child, "-TERM");
        assert_eq!(exit_within(child, PATIENCE).await.0, Some(0));
    }
}

/// Review of 2026-12-04, missing test 3: a SIGHUP that changes one account's `scripts_dir`
/// restarts that account alone (its scripts see `signedOut` then `signedIn`, its application is
/// deleted and a new one made); the other keeps its application; a change to a restart-only key
/// (`server.max_backoff_secs`) recreates no application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_restarts_exactly_the_account_that_changed() {
    let sim = start_sim(two_users()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "life.lua",
        "agent.on('agent', function(e)\n  agent.state.life = agent.state.life or {}\n  table.insert(agent.state.life, e.type)\nend)\n",
    );
    let own = dir.path().join("reception-scripts");
    std::fs::create_dir(&own).unwrap();
    let path = dir.path().join("agent.toml");
    let reception = account(&sim, "reception", RECEPTION, PASSWORD_ENV);
    let helpdesk = account(&sim, "helpdesk", HELPDESK, PASSWORD_ENV);
    std::fs::write(&path, config(dir.path(), &format!("{reception}{helpdesk}"), "")).unwrap();
    let (out, stopper, task) = Fleet::start(Config::load(&path).unwrap(), &["reception", "helpdesk"]).await.run();
    let (reception_app, helpdesk_app) = (available(&sim, RECEPTION).await, available(&sim, HELPDESK).await);

    let moved = reception.replacen("[account.auth]", &format!("scripts_dir = \"{}\"\n[account.auth]", own.display()), 1);
    std::fs::write(&path, config(dir.path(), &format!("{moved}{helpdesk}"), "")).unwrap();
    let _ = out.reloader.reload().await;
    eventually("the reception's application deleted", || sim.counters()["applications_deleted"] == 1).await;
    eventually("a new application for the reception", || sim.counters()["applications_created"] == 3).await;
    let new_app = available(&sim, RECEPTION).await;
    assert_ne!(new_app, reception_app, "the reception started again");
    assert_eq!(available(&sim, HELPDESK).await, helpdesk_app, "the helpdesk was not touched");

    // A restart-only key: logged as needing a restart, no account restarted.
    let slower = config(dir.path(), &format!("{moved}{helpdesk}"), "").replace("max_backoff_secs = 1", "max_backoff_secs = 2");
    std::fs::write(&path, slower).unwrap();
    let _ = out.reloader.reload().await;
    assert_eq!((available(&sim, RECEPTION).await, available(&sim, HELPDESK).await), (new_app, helpdesk_app));
    assert_eq!((sim.counters()["applications_created"].as_u64(), sim.counters()["applications_deleted"].as_u64()), (Some(3), Some(1)));
    assert_eq!(stop(stopper, task).await, RunEnd::Stopped);
    let life = |account: &str| saved_state(&dir.path().join(format!(".state/{account}/agent.db")), "life")["life"].clone();
    // (A new application after the first start comes with `resync`: README, "agent/resync".)
    assert_eq!(life("reception"), serde_json::json!(["signedIn", "signedOut", "resync", "signedIn", "signedOut"]));
    assert_eq!(life("helpdesk"), serde_json::json!(["signedIn", "signedOut"]));
}
