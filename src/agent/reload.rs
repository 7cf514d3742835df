//! SIGHUP: re-read `config.toml`, apply the `[scripts]` settings, reload every script; say
//! which changed keys need a restart.

use crate::config::Config;
use crate::script::ScriptHost;
use std::sync::Arc;

/// Applies a changed configuration file to the scripts; other keys need a restart.
#[derive(Clone)]
pub struct Reloader {
    /// The configuration the agent started with: what runs, for every key a reload cannot
    /// apply (the warnings compare with it, not with the file as last read).
    pub(super) running: Arc<Config>,
    pub(super) host: ScriptHost,
}

impl Reloader {
    /// Reads the file again. A bad file is logged (file, key) and changes nothing. Otherwise
    /// the `[scripts]` settings (limits, `http_allow`, `[scripts.config.*]`, pausing) apply and
    /// every script is reloaded; a change elsewhere is logged as needing a restart.
    pub async fn reload(&self) {
        let path = self.running.path.clone();
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!("configuration not reloaded, the running one stays: {error}");
                return;
            }
        };
        for key in restart_keys(&self.running, &new) {
            tracing::warn!(key, "differs from the running configuration; takes effect after a restart");
        }
        self.host.env().set_settings(new.script_settings());
        self.host.rescan().await;
        tracing::info!(file = %path.display(), "configuration reloaded; scripts rescanned");
    }
}

/// The keys whose change a reload cannot apply.
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let differ = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut keys = Vec::new();
    if differ(&old.server, &new.server) {
        keys.push("server");
    }
    if differ(&old.auth, &new.auth) {
        keys.push("auth");
    }
    if differ(&old.state, &new.state) {
        keys.push("state");
    }
    if differ(&old.simulator, &new.simulator) {
        keys.push("simulator");
    }
    if differ(&old.metrics, &new.metrics) {
        keys.push("metrics");
    }
    if old.scripts.dir != new.scripts.dir {
        keys.push("scripts.dir");
    }
    if old.scripts.watch != new.scripts.watch || old.scripts.reload_debounce_ms != new.scripts.reload_debounce_ms {
        keys.push("scripts.watch / scripts.reload_debounce_ms");
    }
    keys
}

