//! The agent: sign in, create the application, keep it alive, poll its event channel, and hand
//! every event to the scripts, recovering from failures until shut down.

mod account;
pub mod backoff;
pub mod channel;
pub mod endpoints;
pub mod keepalive;
pub mod memory;
pub mod open_files;
pub mod presence;
pub mod record;
pub mod refusal;
mod reload;
pub mod sd_notify;
pub mod sink;
pub mod status;

pub use account::Account;
pub use reload::{LogLevelApplier, Reloader};

use crate::config::{Config, Discover, Shard};
use crate::script::ScriptHost;
use crate::sim::Simulator;
use crate::ucwa::{session::http_client, Auth, UcwaError};
use account::Shared;
use backoff::Backoff;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: `{key}`: the environment variable `{var}` is not set (it must hold the password)")]
    PasswordMissing { file: String, key: String, var: String },
    #[error("{file}: `scripts.dir`: cannot read {dir}: {source}")]
    ScriptsDir { file: String, dir: String, source: std::io::Error },
    #[error("{file}: `{key}`: cannot read {dir}: {source}")]
    AccountScriptsDir { file: String, key: String, dir: String, source: std::io::Error },
    #[error("{file}: `state.dir`: {source}")]
    State { file: String, source: crate::store::StoreError },
    #[error("{file}: `server.ca_file`: {message}")]
    CaFile { file: String, message: String },
    #[error("{file}: `metrics.listen`: cannot listen on {addr}: {source}")]
    Metrics { file: String, addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{file}: `state.dir`: {source}")]
    Locked { file: String, source: crate::store::LockError },
    #[error("{file}: cannot start the embedded simulator on {listen} (`simulator.listen`): {source}")]
    Simulator { file: String, listen: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot watch the scripts directory {dir}: {source}")]
    Watch { dir: String, source: notify::Error },
}

/// How many accounts open (state, scripts) at once at start.
const OPEN_CONCURRENCY: usize = 16;

/// How long running handlers may take to finish at shutdown.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A configured agent: every account of its shard opened (scripts loaded), not yet signed in.
pub struct Agent {
    config: Config,
    shard: Option<Shard>,
    shared: Shared,
    /// The in-process simulator of `discover = "embedded"`; it lives as long as the agent.
    simulator: Option<Simulator>,
    /// Accounts opened by `start`, launched by `run`.
    opened: Vec<Account>,
    fleet: Arc<Fleet>,
    /// Hot reload of `scripts.dir`, whose changes go to every account.
    watcher: Option<crate::script::watch::WatchHandle>,
    /// The `/metrics` endpoint's address and task, when `[metrics] listen` is set.
    endpoints: endpoints::EndpointSlot,
    /// Set by the binary: how a reload changes the log filter.
    log_level: Option<reload::LogLevelApplier>,
    /// `--record FILE`.
    recorder: Option<record::Recorder>,
    /// `--metrics-listen`: wins over `[metrics] listen`, also on SIGHUP.
    metrics_override: Option<std::net::SocketAddr>,
}

impl Agent {
    /// Checks the configuration, starts the embedded simulator if an account uses it, opens
    /// every account and loads its scripts. Scripts that fail to load are logged and skipped;
    /// the agent starts anyway.
    pub async fn start(config: Config) -> Result<Agent, StartError> {
        Agent::start_shard(config, None).await
    }

    /// As `start`, with only the accounts of `shard` (`--shard K/N`).
    pub async fn start_shard(config: Config, shard: Option<Shard>) -> Result<Agent, StartError> {
        let file = config.path.display().to_string();
        // Before any script starts: the Lua workers' pool starts with the first.
        crate::script::pool::configure(config.scripts.workers as usize);
        let specs = config.accounts_of(shard)?;
        open_files::raise(specs.len());
        // What each account needs from outside the file, before anything starts.
        for spec in &specs {
            Account::preflight(spec, &config)?;
        }
        if let (Some(s), true) = (shard, specs.is_empty()) {
            tracing::warn!(shard = %format!("{}/{}", s.index, s.count), "no account of the configuration falls to this shard; idle until a reload adds one");
        }
        let simulator = if specs.iter().any(|s| s.discover == Discover::Embedded) { Some(start_embedded(&config).await?) } else { None };
        let shared = Shared {
            http: pool_client(&config)?,
            outbound: crate::script::outbound_client(),
            embedded: simulator.as_ref().map(|s| Url::parse(&s.discovery_url()).expect("the simulator's URL parses")),
            metric_bytes: Default::default(),
        };
        // `/metrics` and `/healthz` first: they answer (`starting`, 503) while the accounts open.
        let fleet = Arc::new(Fleet::default());
        let endpoints = match config.metrics.listen {
            Some(addr) => Some(endpoints::serve(addr, &config.metrics, config.metrics_tls(), fleet.clone()).await.map_err(|source| StartError::Metrics {
                file: file.clone(),
                addr,
                source,
            })?),
            None => None,
        };
        let endpoints = Arc::new(std::sync::Mutex::new(endpoints));
        // The accounts open several at once: a script whose top level hangs costs its time
        // limit once, not once per account.
        let opening = {
            use futures_util::StreamExt;
            let (config, shared, fleet) = (&config, &shared, &fleet);
            futures_util::stream::iter(specs)
                .map(|spec| async move {
                    let account = Account::open(spec, config, shared).await?;
                    fleet.add(&account);
                    Ok::<Account, StartError>(account)
                })
                .buffered(OPEN_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
        };
        let opened = match opening.into_iter().collect::<Result<Vec<Account>, StartError>>() {
            Ok(opened) => opened,
            Err(e) => {
                endpoints::replace(&endpoints, None);
                return Err(e);
            }
        };
        fleet.started.store(true, std::sync::atomic::Ordering::SeqCst);
        let dir = config.scripts_dir();
        let watcher = if config.scripts.watch {
            let debounce = Duration::from_millis(config.scripts.reload_debounce_ms);
            let f = fleet.clone();
            let targets: crate::script::watch::Targets = Arc::new(move || f.hosts());
            Some(crate::script::watch::watch(dir.clone(), targets, debounce).map_err(|source| StartError::Watch { dir: dir.display().to_string(), source })?)
        } else {
            None
        };
        Ok(Agent { config, shard, shared, simulator, opened, fleet, watcher, endpoints, log_level: None, recorder: None, metrics_override: None })
    }

    /// The scripts of the first account (the only one, without `[[account]]`).
    pub fn scripts(&self) -> ScriptHost {
        self.fleet.hosts().into_iter().next().expect("an agent has an account")
    }

    /// The scripts of the account named `name` (`default` for the unnamed one).
    pub fn account_scripts(&self, name: &str) -> Option<ScriptHost> {
        self.fleet.hosts.lock().expect("fleet lock").get(name).cloned()
    }

    /// Appends every batch received to `path` (JSON Lines) for `replay`. One account only:
    /// a recording is one account's channel.
    pub fn record_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        if self.opened.len() != 1 {
            return Err(std::io::Error::other(format!(
                "a recording is one account's channel; this agent runs {} accounts (record with a configuration of one)",
                self.opened.len()
            )));
        }
        self.recorder = Some(record::Recorder::open(path).map_err(|e| std::io::Error::new(e.kind(), format!("cannot open the file: {e}")))?);
        tracing::info!(file = %path.display(), "recording every event-channel batch (JSON Lines, for `replay`)");
        Ok(())
    }

    /// Re-reads the configuration file (on SIGHUP): `[scripts]` settings, accounts added,
    /// removed or changed, `/metrics`, `log.level`.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            running: Arc::new(std::sync::Mutex::new(self.config.clone())),
            fleet: self.fleet.clone(),
            shard: self.shard,
            shared: self.shared.clone(),
            simulator_users: self.simulator.as_ref().map(|s| s.user_adder()),
            endpoints: self.endpoints.clone(),
            log_level: self.log_level.clone(),
            metrics_override: self.metrics_override,
        }
    }

    /// `--metrics-listen`: where `/metrics` listens whatever the file says (a reload too).
    pub fn set_metrics_listen_override(&mut self, addr: Option<std::net::SocketAddr>) {
        self.metrics_override = addr;
    }

    /// How a reload that changes `log.level` sets the log filter (the binary owns logging).
    pub fn set_log_level_applier(&mut self, apply: reload::LogLevelApplier) {
        self.log_level = Some(apply);
    }

    /// Where `/metrics` and `/healthz` listen, when enabled.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoints.lock().expect("endpoint slot lock").as_ref().map(|(a, _)| *a)
    }

    /// What the binary tells a service manager (readiness, liveness), shared with its tasks.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle(self.fleet.clone())
    }

    /// The embedded simulator, when an account uses it.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Runs every account until `shutdown` completes, then stops them all (each lets its
    /// handlers finish and deletes its application). An account that ends by itself (its
    /// credentials refused) leaves the others running; the agent ends when none runs. Ends
    /// with [`RunEnd::CredentialsRefused`] when every account ended that way.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> RunEnd {
        let (stop_tx, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut recorder = self.recorder.take();
        for account in std::mem::take(&mut self.opened) {
            self.fleet.launch(account, recorder.take());
        }
        let mut ends = self.fleet.ends.lock().expect("fleet lock").take().expect("run is called once");
        let mut refused = None;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                end = ends.recv() => {
                    let Some((name, generation, reason)) = end else { break };
                    self.fleet.ended(&name, generation);
                    let others = self.fleet.any_running();
                    if others {
                        tracing::error!(account = %name, %reason, "account stopped: credentials refused; the other accounts go on");
                    }
                    refused = Some(reason);
                    if !others {
                        break;
                    }
                }
            }
        }
        let ended = self.fleet.stop_all().await;
        let end = match refused {
            Some(reason) if ended.iter().all(|e| matches!(e, RunEnd::CredentialsRefused(_))) => RunEnd::CredentialsRefused(reason),
            _ => RunEnd::Stopped,
        };
        drop(self.watcher);
        endpoints::replace(&self.endpoints, None);
        if let Some(sim) = self.simulator {
            sim.shutdown().await;
        }
        tracing::info!("agent stopped");
        end
    }
}

/// Readiness and liveness of every account, for systemd's notifications (`sd_notify.rs`).
#[derive(Clone)]
pub struct Lifecycle(Arc<Fleet>);

impl Lifecycle {
    /// Ready when every account polls, has stopped, or has had a sign-in attempt fail (it goes
    /// on retrying; a service manager should not wait for a pool that is down). Also a one-line
    /// status.
    pub fn readiness(&self) -> (bool, String) {
        use crate::metrics::HealthState as S;
        let (accounts, _) = self.0.accounts();
        let (mut polling, mut waiting, mut failing) = (0, 0, 0);
        for (_, host) in &accounts {
            let h = host.env().metrics.health();
            match h.state {
                S::Polling | S::Recovering => polling += 1,
                S::Stopped | S::Stopping => {}
                S::SigningIn if h.last_error.is_some() => failing += 1,
                S::Starting | S::SigningIn => waiting += 1,
            }
        }
        let status = match (failing, accounts.len()) {
            (0, 1) if polling == 1 => "signed in and polling".to_string(),
            (0, n) => format!("{polling} of {n} account(s) signed in and polling"),
            (f, n) => format!("{polling} of {n} account(s) polling; {f} failing to sign in (retrying, see the log)"),
        };
        (waiting == 0, status)
    }

    /// Whether every account that polls has shown its event-channel loop running within
    /// `within` (the loop beats every second, also while the pool holds a request).
    pub fn alive(&self, within: Duration) -> bool {
        use crate::metrics::HealthState as S;
        self.0.hosts().iter().all(|host| {
            let m = &host.env().metrics;
            !matches!(m.health().state, S::Polling | S::Recovering) || m.since_heartbeat() <= within
        })
    }
}

/// The accounts that run, by label, shared with the reloader and the endpoints.
pub struct Fleet {
    /// Every account's scripts (also those whose run ended: `/healthz` shows why).
    hosts: std::sync::Mutex<BTreeMap<String, ScriptHost>>,
    /// The accounts are `[[account]]`s (labels shown in `/metrics` and `/healthz`).
    named: std::sync::atomic::AtomicBool,
    /// Set when the agent stops: no account starts after.
    stopping: std::sync::atomic::AtomicBool,
    /// Set once every account of the start has opened (until then `/healthz` says `starting`).
    pub(crate) started: std::sync::atomic::AtomicBool,
    running: std::sync::Mutex<BTreeMap<String, Launched>>,
    /// Accounts that ended by themselves (credentials refused), with the reason.
    /// (label, launch, reason): the launch tells an old run's end from a relaunched one's.
    ends_tx: tokio::sync::mpsc::UnboundedSender<(String, u64, String)>,
    ends: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, u64, String)>>>,
    launches: std::sync::atomic::AtomicU64,
    /// The build, the last reload's outcome: the process's, not an account's.
    pub(crate) status: status::ProcessStatus,
}

struct Launched {
    spec: crate::config::AccountSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<RunEnd>,
    /// Ended by itself; kept so a reload restarts it only when its configuration changed.
    ended: bool,
    generation: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        let (ends_tx, ends) = tokio::sync::mpsc::unbounded_channel();
        Fleet {
            hosts: Default::default(),
            named: Default::default(),
            stopping: Default::default(),
            started: Default::default(),
            launches: Default::default(),
            running: Default::default(),
            ends_tx,
            ends: std::sync::Mutex::new(Some(ends)),
            status: Default::default(),
        }
    }
}

impl Fleet {
    /// Every account's scripts, by label order.
    pub fn hosts(&self) -> Vec<ScriptHost> {
        self.hosts.lock().expect("fleet lock").values().cloned().collect()
    }

    /// Every account's label and scripts, and whether the accounts are named (labels shown).
    pub fn accounts(&self) -> (Vec<(String, ScriptHost)>, bool) {
        let hosts = self.hosts.lock().expect("fleet lock");
        (hosts.iter().map(|(n, h)| (n.clone(), h.clone())).collect(), self.named.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Lists an opened account's scripts (it does not run yet).
    fn add(&self, account: &Account) {
        self.named.store(account.spec.name.is_some(), std::sync::atomic::Ordering::Relaxed);
        self.hosts.lock().expect("fleet lock").insert(account.spec.label().to_string(), account.scripts().clone());
    }

    /// Starts an opened account's run as a task of its own (not once the agent stops: a reload
    /// racing the shutdown must not start an account nobody would stop).
    fn launch(&self, account: Account, recorder: Option<record::Recorder>) {
        // Checked and inserted under the lock `stop_all` takes: no account starts after it.
        let mut running = self.running.lock().expect("fleet lock");
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.add(&account);
        let label = account.spec.label().to_string();
        let spec = account.spec.clone();
        let (stop, stopped) = watch::channel(false);
        let ends = self.ends_tx.clone();
        let name = label.clone();
        let generation = self.launches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let end = account.run(stopped, recorder).await;
            if let RunEnd::CredentialsRefused(reason) = &end {
                let _ = ends.send((name, generation, reason.clone()));
            }
            end
        });
        running.insert(label, Launched { spec, stop, task, ended: false, generation });
    }

    fn any_running(&self) -> bool {
        self.running.lock().expect("fleet lock").values().any(|l| !l.ended)
    }

    fn ended(&self, label: &str, generation: u64) {
        if let Some(l) = self.running.lock().expect("fleet lock").get_mut(label).filter(|l| l.generation == generation) {
            l.ended = true;
        }
    }

    /// The specs of the accounts launched (for a reload to compare with).
    fn specs(&self) -> BTreeMap<String, crate::config::AccountSpec> {
        self.running.lock().expect("fleet lock").iter().map(|(n, l)| (n.clone(), l.spec.clone())).collect()
    }

    /// Stops one account (it deletes its application) and forgets it.
    async fn remove(&self, label: &str) -> Option<RunEnd> {
        let launched = self.running.lock().expect("fleet lock").remove(label)?;
        let _ = launched.stop.send(true);
        let end = launched.task.await.unwrap_or(RunEnd::Stopped);
        self.hosts.lock().expect("fleet lock").remove(label);
        Some(end)
    }

    /// Stops every account at once and waits for all of them.
    async fn stop_all(&self) -> Vec<RunEnd> {
        let all: Vec<Launched> = {
            let mut running = self.running.lock().expect("fleet lock");
            self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            std::mem::take(&mut *running).into_values().collect()
        };
        for l in &all {
            let _ = l.stop.send(true);
        }
        let ends = futures_util::future::join_all(all.into_iter().map(|l| l.task)).await;
        ends.into_iter().map(|e| e.unwrap_or(RunEnd::Stopped)).collect()
    }
}

/// Starts the embedded simulator with the file's `[simulator]` settings.
async fn start_embedded(config: &Config) -> Result<Simulator, StartError> {
    let listen = config.simulator.listen.unwrap_or(([127, 0, 0, 1], 0).into());
    Simulator::start(config.embedded_simulator(), listen).await.map_err(|source| StartError::Simulator {
        file: config.path.display().to_string(),
        listen,
        source,
    })
}

/// The client every pool request goes through (with `server.ca_file`'s CAs).
fn pool_client(config: &Config) -> Result<reqwest::Client, StartError> {
    let file = config.path.display().to_string();
    let ca = match &config.server.ca_file {
        Some(p) => Some(std::fs::read(config.resolve(p)).map_err(|e| StartError::CaFile { file: file.clone(), message: e.to_string() })?),
        None => None,
    };
    http_client(ca.as_deref()).map_err(|message| StartError::CaFile { file, message })
}

/// What signing in needs for one account (`check --online`): where to discover the pool
/// (starting the embedded simulator if that is the pool), the credentials and the HTTP client.
pub struct Pool {
    pub discover: Url,
    pub auth: Auth,
    pub http: reqwest::Client,
    /// The embedded simulator, when that is the pool; it serves as long as this lives.
    pub simulator: Option<Simulator>,
}

impl Pool {
    pub async fn of_account(config: &Config, spec: &crate::config::AccountSpec) -> Result<Pool, StartError> {
        let (discover, simulator) = match &spec.discover {
            Discover::Embedded => {
                let sim = start_embedded(config).await?;
                (Url::parse(&sim.discovery_url()).expect("the simulator's URL parses"), Some(sim))
            }
            Discover::Url(url) => (url.clone(), None),
        };
        Ok(Pool { discover, auth: account::auth_for(spec, config)?, http: pool_client(config)?, simulator })
    }
}
/// Sign-in attempts the pool may refuse in a row (`invalid_grant`, a rejected bearer token)
/// before the agent stops: retrying a wrong password against Active Directory locks the account.
pub const MAX_CREDENTIAL_REFUSALS: u32 = 3;

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Shut down as asked.
    Stopped,
    /// The pool refused the credentials [`MAX_CREDENTIAL_REFUSALS`] times in a row (the last reason).
    CredentialsRefused(String),
}

/// Credential refusals since the last successful sign-in.
#[derive(Default)]
pub(crate) struct Refusals(u32);

impl Refusals {
    /// Counts `error` if it is a refusal; at the limit, says so (one ERROR line) and gives the end.
    pub(crate) fn count(&mut self, error: &UcwaError) -> Option<RunEnd> {
        if !matches!(error, UcwaError::Credentials(_)) {
            return None;
        }
        self.0 += 1;
        if self.0 < MAX_CREDENTIAL_REFUSALS {
            return None;
        }
        tracing::error!(
            %error,
            attempts = self.0,
            "the pool refused the credentials {MAX_CREDENTIAL_REFUSALS} times in a row; stopping (fix [auth] or the secret it names, then start the agent again)"
        );
        Some(RunEnd::CredentialsRefused(error.to_string()))
    }
}

/// Waits out a backoff delay; false if shutdown came first.
pub(crate) async fn pause(backoff: &mut Backoff, retry_after: Option<Duration>, stop: &mut watch::Receiver<bool>) -> bool {
    let delay = backoff.next_delay(retry_after);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
    }
}

/// A GUID-shaped EndpointId derived from the user name, so a restart finds the same application.
pub fn endpoint_id_for(username: &str) -> String {
    // FNV-1a, 128 bits: stable across builds and platforms (unlike std's hasher).
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in username.to_ascii_lowercase().bytes().chain(*b"ucwa-agent") {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let x = format!("{h:032x}");
    format!("{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}
