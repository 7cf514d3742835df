//! SIGHUP: re-read `config.toml`, apply what can change live (the `[scripts]` settings, the
//! accounts, the `/metrics` listener, `log.level`), reload every script; say which changed
//! keys need a restart.
//!
//! Accounts: one that is gone from the file stops (deleting its application); a new one
//! starts; one whose `discover`, `[auth]` or `scripts_dir` changed restarts. The others are
//! not touched.

use super::account::Account;
use super::endpoints::{self, EndpointSlot};
use super::pool::Shared;
use super::Fleet;
use crate::config::{AccountSpec, Config, Discover, ServerConfig, Shard};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

/// Sets the log filter (`log.level` directives); an error says why they were not applied.
pub type LogLevelApplier = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Applies a changed configuration file to what runs; other keys need a restart.
#[derive(Clone)]
pub struct Reloader {
    /// What runs: the configuration the agent started with, with the live keys as last
    /// applied. The warnings compare with it, not with the file as last read.
    pub(super) running: Arc<Mutex<Config>>,
    pub(super) fleet: Arc<Fleet>,
    /// `--shard`: which of the file's accounts are this agent's.
    pub(super) shard: Option<Shard>,
    pub(super) shared: Shared,
    /// Adds an account's user to the embedded simulator, when it runs.
    pub(super) simulator_users: Option<crate::sim::UserAdder>,
    pub(super) endpoints: EndpointSlot,
    pub(super) log_level: Option<LogLevelApplier>,
    /// `--metrics-listen`, which the file does not change.
    pub(super) metrics_override: Option<std::net::SocketAddr>,
}

impl Reloader {
    /// Reads the file again. A bad file is logged (file, key) and changes nothing. Otherwise
    /// the `[scripts]` settings (limits, `http_allow`, `[scripts.config.*]`, pausing) apply and
    /// every script is reloaded; a change elsewhere is logged as needing a restart.
    /// `Err` says what was rejected (the whole file, or a part that could not be applied); it
    /// is also recorded for `/metrics` (`ucwa_config_last_reload_success`) and `/healthz`.
    pub async fn reload(&self) -> Result<(), String> {
        let outcome = self.reload_file().await;
        self.fleet.status.reloaded(outcome.clone());
        outcome
    }

    async fn reload_file(&self) -> Result<(), String> {
        let mut rejected: Vec<String> = Vec::new();
        let (path, running) = {
            let r = self.running.lock().expect("running config lock");
            (r.path.clone(), r.clone())
        };
        // Accounts are made with the running values of the keys a reload does not apply
        // (`[server]` but `discover`, `[state]`, `scripts.dir`/`watch`/`reload_debounce_ms`),
        // so that a change there restarts no account onto new folders or settings.
        let loaded = Config::load(&path).and_then(|c| {
            let mut effective = c.clone();
            keep_running(&mut effective, &running);
            effective.accounts_of(self.shard).map(|specs| (c, effective, specs))
        });
        let (mut new, effective, specs) = match loaded {
            Ok(c) => c,
            Err(error) => {
                tracing::error!("configuration not reloaded, the running one stays: {error}");
                return Err(error.to_string());
            }
        };
        if let Some(addr) = self.metrics_override {
            new.metrics.listen = Some(addr);
        }
        for key in restart_keys(&running, &new) {
            tracing::warn!(key, "differs from the running configuration; takes effect after a restart");
        }
        let metrics = match self.apply_metrics_listen(&running, &new).await {
            Ok(m) => m,
            Err((m, error)) => {
                rejected.push(error);
                m
            }
        };
        let log = self.apply_log_level(&running, &new);
        let settings = new.script_settings();
        for host in self.fleet.hosts() {
            host.env().set_settings(settings.clone());
        }
        let started = self.apply_accounts(&effective, specs, &mut rejected).await;
        {
            let mut r = self.running.lock().expect("running config lock");
            // Only what was applied: `[scripts]` but its restart-only keys, `[metrics]`, `[log]`.
            let mut applied = new.clone();
            keep_running(&mut applied, &r);
            r.scripts = applied.scripts;
            r.metrics = metrics;
            r.log = log;
        }
        for host in self.fleet.hosts() {
            if started.iter().any(|s| s == &host.env().account.name) {
                continue;
            }
            let span = host.env().span.clone();
            host.rescan().instrument(span).await;
        }
        if rejected.is_empty() {
            tracing::info!(file = %path.display(), "configuration reloaded; scripts rescanned");
            Ok(())
        } else {
            tracing::error!(file = %path.display(), rejected = %rejected.join("; "), "configuration reloaded in part; scripts rescanned");
            Err(rejected.join("; "))
        }
    }

    /// Stops the accounts gone from the file, restarts the changed ones, starts the new ones;
    /// gives the labels of those started (their scripts are fresh).
    async fn apply_accounts(&self, new: &Config, specs: Vec<AccountSpec>, rejected: &mut Vec<String>) -> Vec<String> {
        let running = self.fleet.specs();
        let mut kept = Vec::new();
        for (label, spec) in &running {
            let now = specs.iter().find(|s| s.label() == label);
            if now == Some(spec) {
                continue;
            }
            // A changed account whose new settings cannot work (a password variable this
            // process does not have, a scripts folder that cannot be read) keeps running as it was.
            if let Some(Err(error)) = now.map(|s| Account::preflight(s, new)) {
                tracing::error!(account = %label, "not restarted, it keeps running as it was: {error}");
                rejected.push(format!("account {label} not restarted: {error}"));
                kept.push(label.clone());
                continue;
            }
            let why = if now.is_some() { "its discover, [auth] or scripts_dir changed: restarting it" } else { "gone from the configuration: stopping it" };
            tracing::info!(account = %label, "{why} (its application is deleted)");
            self.fleet.remove(label).await;
        }
        let mut started = Vec::new();
        for spec in specs {
            let label = spec.label().to_string();
            if running.get(&label) == Some(&spec) || kept.contains(&label) {
                continue;
            }
            if spec.discover == Discover::Embedded {
                match (&self.simulator_users, &spec.auth) {
                    (Some(users), None) => users.add(&spec.simulator_user(), crate::sim::DEMO_PASSWORD),
                    (Some(_), Some(_)) => {}
                    (None, _) => {
                        tracing::error!(account = %label, "not started: the embedded simulator is not running (no account used it at start); restart the agent");
                        rejected.push(format!("account {label} not started: the embedded simulator is not running"));
                        continue;
                    }
                }
            }
            match Account::open(spec, new, &self.shared).await {
                Ok(account) => {
                    tracing::info!(account = %label, "account added; signing in");
                    self.fleet.launch(account, None);
                    started.push(label);
                }
                Err(error) => {
                    tracing::error!(account = %label, "account not started: {error}");
                    rejected.push(format!("account {label} not started: {error}"));
                }
            }
        }
        started
    }

    /// Moves, starts or stops the `/metrics` endpoint (a new address or new users); gives the
    /// settings now running, with the error when the new ones could not be applied.
    async fn apply_metrics_listen(&self, running: &Config, new: &Config) -> Result<crate::config::MetricsConfig, (crate::config::MetricsConfig, String)> {
        if new.metrics == running.metrics {
            return Ok(running.metrics.clone());
        }
        match new.metrics.listen {
            None => {
                endpoints::replace(&self.endpoints, None);
                tracing::info!(key = "metrics.listen", "the /metrics and /healthz endpoint is stopped");
                Ok(new.metrics.clone())
            }
            Some(addr) => {
                // The same address: the old listener goes first, or the new one could not bind.
                let same_address = running.metrics.listen == Some(addr);
                if same_address {
                    endpoints::stop(&self.endpoints).await;
                }
                match endpoints::serve(addr, &new.metrics, new.metrics_tls(), self.fleet.clone()).await {
                    Ok(started) => {
                        tracing::info!(key = "metrics.listen", listen = %started.0, "the /metrics and /healthz endpoint listens here now");
                        endpoints::replace(&self.endpoints, Some(started));
                        Ok(new.metrics.clone())
                    }
                    Err(error) => {
                        // The old endpoint was stopped to free its address: start it again as it was.
                        if same_address {
                            if let Ok(again) = endpoints::serve(addr, &running.metrics, running.metrics_tls(), self.fleet.clone()).await {
                                endpoints::replace(&self.endpoints, Some(again));
                            }
                        }
                        tracing::error!(key = "metrics.listen", listen = %addr, %error, "cannot serve the new [metrics] settings; the running endpoint stays as it was");
                        Err((running.metrics.clone(), format!("[metrics]: cannot serve on {addr}: {error}")))
                    }
                }
            }
        }
    }

    /// Applies a changed `log.level` (unless `RUST_LOG` is set, which wins); gives what runs.
    fn apply_log_level(&self, running: &Config, new: &Config) -> crate::config::LogConfig {
        let effective = |c: &Config| c.log.level.clone().unwrap_or_else(|| "info".into());
        if effective(new) == effective(running) {
            return new.log.clone();
        }
        let Some(apply) = &self.log_level else {
            return running.log.clone();
        };
        if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
            tracing::warn!(key = "log.level", "RUST_LOG is set and wins over log.level; not changed");
            return running.log.clone();
        }
        let level = new.log.level.as_deref().unwrap_or("info");
        match apply(level) {
            Ok(()) => {
                tracing::info!(key = "log.level", filter = level, "log level changed");
                new.log.clone()
            }
            Err(error) => {
                tracing::error!(key = "log.level", filter = level, %error, "log level not changed");
                running.log.clone()
            }
        }
    }
}

/// A key a reload does not apply: what it is called in the warning, whether two
/// configurations differ in it, and how to put the running value back into a new one.
struct RestartKey {
    name: &'static str,
    differs: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

/// The keys that need a restart, written once: a change warns (`restart_keys`), and the new
/// configuration takes the running values (`keep_running`), both for the accounts a reload
/// makes (so that a change there restarts no account onto new folders or settings) and for the
/// configuration kept as running. `server.discover` and `[auth]` are an account's: a change
/// restarts that account, so they are not here.
const RESTART_KEYS: &[RestartKey] = &[
    RestartKey {
        name: "server",
        differs: |a, b| ServerConfig { discover: String::new(), ..a.server.clone() } != ServerConfig { discover: String::new(), ..b.server.clone() },
        keep: |c, running| c.server = ServerConfig { discover: c.server.discover.clone(), ..running.server.clone() },
    },
    RestartKey { name: "state", differs: |a, b| a.state != b.state, keep: |c, running| c.state = running.state.clone() },
    RestartKey { name: "simulator", differs: |a, b| a.simulator != b.simulator, keep: |c, running| c.simulator = running.simulator.clone() },
    RestartKey { name: "scripts.dir", differs: |a, b| a.scripts.dir != b.scripts.dir, keep: |c, running| c.scripts.dir = running.scripts.dir.clone() },
    RestartKey {
        name: "scripts.watch / scripts.reload_debounce_ms",
        differs: |a, b| a.scripts.watch != b.scripts.watch || a.scripts.reload_debounce_ms != b.scripts.reload_debounce_ms,
        keep: |c, running| (c.scripts.watch, c.scripts.reload_debounce_ms) = (running.scripts.watch, running.scripts.reload_debounce_ms),
    },
    RestartKey {
        name: "scripts.workers",
        differs: |a, b| a.scripts.workers != b.scripts.workers,
        keep: |c, running| c.scripts.workers = running.scripts.workers,
    },
];

/// The keys whose change a reload cannot apply.
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    RESTART_KEYS.iter().filter(|k| (k.differs)(old, new)).map(|k| k.name).collect()
}

/// Gives `new` the running values of every key a reload does not apply.
fn keep_running(new: &mut Config, running: &Config) {
    for k in RESTART_KEYS {
        (k.keep)(new, running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/ucwa/config.toml")).expect("a valid configuration")
    }

    #[test]
    fn restart_only_keys_warn_and_keep_their_running_values() {
        let running = config("[server]\ndiscover = \"embedded\"\n");
        let new = config(
            "[server]\ndiscover = \"https://pool.example.com/\"\npoll_timeout_secs = 600\n[auth]\nkind = \"bearer\"\ntoken_env = \"UCWA_TOKEN\"\n[scripts]\nreload_debounce_ms = 500\nhandler_timeout_ms = 2000\n[state]\njournal_max_events = 5000\n",
        );
        // `discover` is an account's (it restarts the account), not a restart of the agent.
        assert_eq!(restart_keys(&running, &new), ["server", "state", "scripts.watch / scripts.reload_debounce_ms"]);
        assert!(restart_keys(&running, &running).is_empty());
        let mut kept = new.clone();
        keep_running(&mut kept, &running);
        assert!(restart_keys(&running, &kept).is_empty(), "{:?}", restart_keys(&running, &kept));
        assert_eq!(kept.server.discover, "https://pool.example.com/");
        assert_eq!(kept.server.poll_timeout_secs, running.server.poll_timeout_secs);
        assert_eq!(kept.scripts.reload_debounce_ms, running.scripts.reload_debounce_ms);
        // What a reload applies is left as the file says.
        assert_eq!(kept.scripts.handler_timeout_ms, 2000);
    }
}
