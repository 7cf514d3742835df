//! The agent (`Agent`): every account of its shard opened, then run until shut down, with the
//! embedded simulator, the endpoints, the shared scripts watcher and the reloader around them.

use super::account::Account;
use super::end::{RunEnd, StartError};
use super::endpoints;
use super::fleet::Fleet;
use super::lifecycle::{Lifecycle, ReloadRequests};
use super::pool::{pool_client, start_embedded, Shared};
use super::record;
use super::reload::{self, Reloader};
use crate::config::{Config, Discover, Shard};
use crate::script::ScriptHost;
use crate::sim::Simulator;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use url::Url;

/// How many accounts open (state, scripts) at once at start.
const OPEN_CONCURRENCY: usize = 16;

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
        crate::store::configure_open_databases(config.state.open_databases as usize);
        let specs = config.accounts_of(shard)?;
        super::open_files::raise(specs.len(), config.state.open_databases);
        // What each account needs from outside the file, before anything starts.
        for spec in &specs {
            Account::preflight(spec, &config)?;
        }
        // Another agent on a state folder is said as that, before this one starts its simulator
        // and endpoints (whose fixed ports that agent holds: their errors would hide the cause).
        // Each lock is taken again, and kept, when its account opens.
        for spec in &specs {
            crate::store::DirLock::acquire(&spec.state_dir).map_err(|source| StartError::Locked { file: file.clone(), source })?;
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
        // A token named but missing: as a password named but missing, `run` does not start.
        if let Some(missing) = config.admin_token_missing().filter(|_| config.metrics.listen.is_some()) {
            return Err(StartError::AdminToken { file, message: missing.message() });
        }
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

    /// Completes each time the console asks for a configuration reload (the binary then reloads
    /// as on SIGHUP).
    pub fn reload_requests(&self) -> ReloadRequests {
        ReloadRequests(self.fleet.clone())
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
