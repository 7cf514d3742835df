//! Shared test helpers: a simulator with short timeouts, an agent running real scripts against
//! it, and waiting for what the scripts did.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};
use ucwa_agent::agent::Agent;
use ucwa_agent::config::Config;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{CallSpec, SimConfig, Simulator};

/// How long a test waits for something that should happen within milliseconds.
/// Generous: a hog test burns both cores for seconds, and CI machines are slow and shared.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The environment variable the test configurations name for the password.
pub const PASSWORD_ENV: &str = "UCWA_AGENT_TEST_PASSWORD";

pub fn sim_config() -> SimConfig {
    SimConfig { min_poll_timeout: Duration::from_secs(1), ring_time: Duration::from_millis(50), ..SimConfig::default() }
}

pub async fn start_sim(config: SimConfig) -> Simulator {
    Simulator::start(config, ([127, 0, 0, 1], 0).into()).await.expect("the simulator binds a loopback port")
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a test file");
}

/// A running agent and what its scripts do.
pub struct Running {
    pub out: broadcast::Receiver<ScriptOutput>,
    /// What SIGHUP calls.
    pub reloader: ucwa_agent::agent::Reloader,
    /// Where `/metrics` and `/healthz` listen, when configured.
    pub metrics: Option<std::net::SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ucwa_agent::agent::RunEnd>,
}

impl Running {
    /// Asks the agent to shut down and waits until it has.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task).await.expect("the agent stops").expect("the agent task ends cleanly");
    }

    /// The next output that `pred` accepts (earlier ones are dropped).
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&ScriptOutput) -> bool) -> ScriptOutput {
        expect(&mut self.out, what, pred).await
    }

    /// The next `n` log messages of `script`, in order; a handler error of `script` fails the test.
    pub async fn messages(&mut self, script: &str, n: usize) -> Vec<String> {
        messages_of(&mut self.out, script, n).await
    }
}

pub async fn expect(out: &mut broadcast::Receiver<ScriptOutput>, what: &str, pred: impl Fn(&ScriptOutput) -> bool) -> ScriptOutput {
    let wait = async {
        loop {
            match out.recv().await {
                Ok(o) if pred(&o) => return o,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    panic!("test lagged {n} outputs behind")
                }
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("output closed while waiting for {what}")
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The `[auth]` lines of the simulator's demo account, password from `PASSWORD_ENV`.
pub const PASSWORD_AUTH: &str = "kind = \"password\"\nusername = \"demo@contoso.com\"\npassword_env = \"UCWA_AGENT_TEST_PASSWORD\"";

/// The configuration text for an agent pointed at `sim`, with its scripts in `dir`.
pub fn config_text(sim: &Simulator, dir: &Path, extra: &str) -> String {
    config_with_auth(sim, dir, PASSWORD_AUTH, extra)
}

/// `config_text` with other `[auth]` lines (`extra` goes on in `[scripts]`).
pub fn config_with_auth(sim: &Simulator, dir: &Path, auth: &str, extra: &str) -> String {
    format!(
        "[server]\ndiscover = \"{}\"\nmax_backoff_secs = 1\n[auth]\n{auth}\n[state]\ndir = \"{}\"\n[scripts]\ndir = \"{}\"\n{extra}\n",
        sim.discovery_url(),
        dir.join(".state").display(),
        dir.display()
    )
}

/// Writes `config_text` to `dir/agent.toml` for the binary.
pub fn config_file(sim: &Simulator, dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, config_text(sim, dir, extra)).expect("write the configuration");
    path
}

/// The agent binary with `args`, the test password in its environment, `RUST_LOG=warn` unless
/// `env` says otherwise, standard output discarded.
pub fn agent_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_ucwa-agent"));
    c.args(args).env(PASSWORD_ENV, "demo").env("RUST_LOG", "warn").stdout(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `ucwa-agent run --config PATH`, its log to `stderr`.
pub fn spawn_agent(config: &Path, stderr: impl Into<std::process::Stdio>) -> Guarded {
    let config = config.to_str().expect("a UTF-8 path");
    agent_command(&["run", "--config", config], &[]).stderr(stderr).spawn_guarded()
}

/// A child process that is killed (and reaped) when dropped: a test that fails halfway leaves
/// no agent or simulator running behind it.
pub struct Guarded(Option<std::process::Child>);

impl std::ops::Deref for Guarded {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("the child is held")
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the child is held")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// `Command::spawn`, guarded.
pub trait SpawnGuarded {
    fn spawn_guarded(&mut self) -> Guarded;
}

impl SpawnGuarded for std::process::Command {
    fn spawn_guarded(&mut self) -> Guarded {
        Guarded(Some(self.spawn().expect("the binary starts")))
    }
}

/// Sends `sig` (`-TERM`, `-HUP`, `-INT`, …) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill runs").success();
    assert!(ok, "kill {sig} {}", child.id());
}

/// Waits (at most `limit`) for the child to exit: its exit code and how long that took.
pub async fn exit_within(child: &mut std::process::Child, limit: Duration) -> (Option<i32>, Duration) {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return (status.code(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the agent did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Command::output`, bounded: a process still running after `limit` is killed and the test
/// fails. Its output goes through files, so a full pipe cannot hold it up.
pub async fn output_within(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |p: &Path| std::fs::File::create(p).expect("an output file");
    let mut child = cmd.stdin(std::process::Stdio::null()).stdout(file(&out)).stderr(file(&err)).spawn_guarded();
    exit_within(&mut child, limit).await;
    let status = child.wait().expect("the child can be waited for");
    std::process::Output { status, stdout: std::fs::read(&out).unwrap_or_default(), stderr: std::fs::read(&err).unwrap_or_default() }
}

/// `output_within` for a test without a runtime (it blocks its thread while it waits).
pub fn output_bounded(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |p: &Path| std::fs::File::create(p).expect("an output file");
    let mut child = cmd.stdout(file(&out)).stderr(file(&err)).spawn_guarded();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        assert!(started.elapsed() < limit, "{cmd:?} did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output { status, stdout: std::fs::read(&out).unwrap_or_default(), stderr: std::fs::read(&err).unwrap_or_default() }
}

/// Waits until the file at `path` contains `needle` (a log line, a recorded batch).
pub async fn file_contains(path: &Path, needle: &str) {
    eventually(&format!("{needle:?} in {}", path.display()), || std::fs::read_to_string(path).unwrap_or_default().contains(needle)).await;
}

/// Starts an agent with `config` (text) and waits until its application can take calls.
pub async fn start_agent(sim: &Simulator, config: &str) -> Running {
    start_agent_waiting(sim, config, true).await
}

/// Starts an agent; `wait` for its application to be available (false: it may never sign in).
pub async fn start_agent_waiting(sim: &Simulator, config: &str, wait: bool) -> Running {
    let config = Config::parse(config, Path::new("test-config.toml")).expect("the test configuration is valid");
    run_agent(sim, config, wait).await
}

/// Starts an agent from a configuration file (so that a reload can read it again).
pub async fn start_agent_from_file(sim: &Simulator, path: &Path) -> Running {
    run_agent(sim, Config::load(path).expect("the test configuration is valid"), true).await
}

async fn run_agent(sim: &Simulator, config: Config, wait: bool) -> Running {
    // Every test uses the same value, so setting it from parallel tests is harmless.
    std::env::set_var(PASSWORD_ENV, "demo");
    let agent = Agent::start(config).await.expect("the agent starts");
    let out = agent.scripts().subscribe();
    let reloader = agent.reloader();
    let metrics = agent.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    if wait {
        wait_available(sim).await;
    }
    Running { out, reloader, metrics, stop: Some(stop), task }
}

/// An HTTP client for the tests' own requests, trusting the test CA of `tests/fixtures/tls`
/// (so it can reach a simulator serving HTTPS too).
pub fn test_http() -> reqwest::Client {
    let ca = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem")).expect("the test CA");
    reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap()
}

/// Waits until some application has made itself available (incoming calls can ring).
pub async fn wait_available(sim: &Simulator) {
    let url = format!("{}/sim/v1/applications", sim.origin());
    let http = test_http();
    let wait = async {
        loop {
            let apps: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            if apps.as_array().unwrap().iter().any(|a| a["available"] == true && a["pollParked"] == true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("an application becomes available");
}

/// An incoming call that is answered and lasts until ended.
pub fn answered_call() -> CallSpec {
    CallSpec { ring_ms: Some(10), ..CallSpec::default() }
}

/// A server on loopback that accepts connections and never answers; returns its port.
pub async fn silent_server() -> u16 {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    port
}

/// One request a webhook receiver got.
#[derive(Debug)]
pub struct Hook {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: String,
}

/// A webhook receiver on loopback answering `{"ok":true}`; returns `host:port` and its requests.
pub async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Hook>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
            let _ = tx.send(Hook { method, path, content_type, body: String::from_utf8_lossy(&body).into_owned() });
            "{\"ok\":true}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("127.0.0.1:{}", addr.port()), rx)
}

/// Waits until `cond` holds (checked every 10 ms); fails naming `what` after `PATIENCE`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A script's `agent.state` as committed in the database at `db` (`{}` if none or unreadable).
pub fn saved_state(db: &Path, script: &str) -> serde_json::Value {
    let mut state = serde_json::Map::new();
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return state.into();
    };
    let Ok(mut st) = conn.prepare("SELECT key, json FROM state_keys WHERE script = ?1") else {
        return state.into();
    };
    let rows = st.query_map([script], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)));
    for (k, json) in rows.into_iter().flatten().flatten() {
        state.insert(k, serde_json::from_str(&json).unwrap_or(serde_json::Value::Null));
    }
    state.into()
}

/// The next `n` log messages of `script` on `out`, in order; a handler error of `script`
/// fails the test.
pub async fn messages_of(out: &mut broadcast::Receiver<ScriptOutput>, script: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let o = expect(
            out,
            &format!("{n} log lines of {script} (got {got:?})"),
            |o| matches!(o, ScriptOutput::Log { script: s, .. } | ScriptOutput::HandlerError { script: s, .. } if s == script),
        )
        .await;
        match o {
            ScriptOutput::Log { message, .. } => got.push(message),
            other => panic!("{script} failed after {got:?}: {other:?}"),
        }
    }
    got
}

/// `n` audioVideoSession events (the documentation's sample) numbered from `first`, as one batch.
pub fn events(first: u64, n: u64) -> Vec<ucwa_agent::ucwa::Event> {
    use ucwa_agent::ucwa::{batch, Origin};
    let body = std::fs::read(format!("{}/tests/fixtures/events/audioVideoSession-added.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    (0..n)
        .map(|i| {
            let mut ev = batch::parse(&body, &origin).unwrap().events.remove(0);
            ev.seq = first + i;
            ev
        })
        .collect()
}
