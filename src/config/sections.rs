//! The file's sections (`[server]`, `[scripts]`, `[state]`, `[log]`, `[metrics]`,
//! `[simulator]`), each with its defaults; `Config` (`file.rs`) holds one of each.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `"embedded"` (start the simulator in-process) or a pool's discovery URL.
    pub discover: String,
    /// Seconds the server may hold each event-channel request (UCWA's `timeout`, 180–1800).
    pub poll_timeout_secs: u64,
    /// Seconds between reportMyActivity calls (UCWA asks for at least one every 4 minutes).
    pub keepalive_secs: u64,
    /// The longest wait between two retries after a failure.
    pub max_backoff_secs: u64,
    /// The `UserAgent` of the application (at most 100 characters).
    pub user_agent: String,
    /// The application's `EndpointId`; default: one derived from the user name, stable across restarts.
    pub endpoint_id: Option<String>,
    /// Modalities announced by makeMeAvailable.
    pub modalities: Vec<String>,
    /// Extra CA certificates (PEM) to trust besides the built-in roots (a corporate CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            discover: "embedded".into(),
            poll_timeout_secs: 180,
            keepalive_secs: 180,
            max_backoff_secs: 30,
            user_agent: concat!("ucwa-agent/", env!("CARGO_PKG_VERSION")).into(),
            endpoint_id: None,
            modalities: vec!["Messaging".into(), "Audio".into(), "Video".into()],
            ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    pub dir: PathBuf,
    /// Memory limit of each script's Lua state, in MiB.
    pub memory_limit_mb: u64,
    /// Lua VM instructions one handler call may run.
    pub instruction_limit: u64,
    /// Wall-clock limit of one handler call, in milliseconds.
    pub handler_timeout_ms: u64,
    /// How long the directory must be quiet before changed scripts are reloaded.
    pub reload_debounce_ms: u64,
    /// Hot reload on file changes.
    pub watch: bool,
    /// Hosts (`name` or `name:port`) that `agent.http.request` may reach.
    pub http_allow: Vec<String>,
    /// Consecutive handler failures after which a script pauses until its file changes (0 = never).
    pub max_consecutive_failures: u32,
    /// The largest `agent.state` a script may keep, in bytes of JSON.
    pub state_max_bytes: u64,
    /// The IANA zone of `agent.time.zone()` and of schedules that name none (default: the
    /// system's, from `TZ` or `/etc/localtime`, else UTC).
    pub time_zone: Option<String>,
    /// `[scripts.calendars]`: holiday iCalendar files by name (relative to this file's folder),
    /// for business hours (`agent.time.open`); read with the configuration.
    pub calendars: std::collections::BTreeMap<String, PathBuf>,
    /// How many traces of its runs (what each handler did with an event) each script keeps
    /// in the state database; 0: no traces.
    pub traces_per_script: u64,
    /// `[scripts.config.<name>]`: each script's own table, as `agent.config`.
    pub config: std::collections::BTreeMap<String, serde_json::Value>,
    /// The threads every script of the process runs on (0: one per CPU). Read at start.
    pub workers: u64,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            dir: "scripts".into(),
            memory_limit_mb: 64,
            instruction_limit: 50_000_000,
            handler_timeout_ms: 10_000,
            reload_debounce_ms: 100,
            watch: true,
            http_allow: Vec::new(),
            max_consecutive_failures: 10,
            state_max_bytes: 1 << 20,
            time_zone: None,
            calendars: Default::default(),
            traces_per_script: 100,
            config: Default::default(),
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub dir: PathBuf,
    /// The journal keeps at most this many events, even for a script that lags behind.
    pub journal_max_events: u64,
    /// The accounts' databases the process holds open at once (the most recently used; the
    /// others open again at their next use: `store::pool`, whose `DEFAULT_OPEN` this default is).
    pub open_databases: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { dir: "state".into(), journal_max_events: 100_000, open_databases: 64 }
    }
}

/// What is logged.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG`-style directives (`info`, `debug`, `info,script=debug`); `RUST_LOG`, when
    /// set, wins. Unset: `info`.
    pub level: Option<String>,
}

/// `/metrics` and `/healthz`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// An address and port (`"127.0.0.1:9464"`, `"0.0.0.0:9464"` for a scraper on another
    /// host or pod); unset: no endpoint.
    pub listen: Option<std::net::SocketAddr>,
    /// User name → bcrypt hash of the password (`htpasswd -nBC 10 USER`), as the Prometheus
    /// exporters' web configuration has them: every request must then carry one of them
    /// (HTTP basic auth). Empty: no authentication.
    pub basic_auth_users: std::collections::BTreeMap<String, String>,
    /// HTTPS: the certificate chain (PEM, leaf first) and its private key; both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The environment variable holding the console's admin token: with it, the console's
    /// actions (resume a paused script, reload) are allowed to requests that carry it
    /// (`X-Admin-Token`). Unset: the console is read-only.
    pub admin_token_env: Option<String>,
}

impl MetricsConfig {
    /// Whether `/healthz` may name accounts and quote errors: on loopback (only this host can
    /// ask) or behind basic auth. Elsewhere it gives the status alone.
    pub fn trusted(&self) -> bool {
        !self.basic_auth_users.is_empty() || self.listen.is_some_and(|a| a.ip().is_loopback())
    }
}

/// The shortest admin token taken (bytes): a short one could be guessed.
pub const ADMIN_TOKEN_MIN: usize = 16;

/// The console's admin token from the environment variable `var` (`metrics.admin_token_env`),
/// or why it cannot serve (unset, or too short to resist guessing).
pub fn admin_token(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(t) if t.trim().len() >= ADMIN_TOKEN_MIN => Ok(t.trim().to_string()),
        Ok(t) if !t.is_empty() => {
            Err(format!("the token in the environment variable `{var}` is shorter than {ADMIN_TOKEN_MIN} characters (`openssl rand -hex 32` makes one)"))
        }
        _ => Err(format!("the environment variable `{var}` is not set (it must hold the console's admin token)")),
    }
}

/// Used only with `discover = "embedded"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Where it listens (loopback); unset: an ephemeral port (the embedded one) or
    /// 127.0.0.1:8480 (`simulate`).
    pub listen: Option<std::net::SocketAddr>,
    /// Real pools' deviations to reproduce (`sim::Quirk`, snake_case names).
    pub quirks: crate::sim::Quirks,
    /// The users it accepts (password `demo`); unset: the demo user and every embedded
    /// account's user. The call generator spreads calls over them.
    pub users: Vec<String>,
    pub calls_per_minute: f64,
    pub ring_secs: f64,
    pub call_duration_secs: f64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { listen: None, quirks: crate::sim::Quirks::new(), users: Vec::new(), calls_per_minute: 6.0, ring_secs: 2.0, call_duration_secs: 8.0 }
    }
}

/// Where the agent talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discover {
    /// The simulator, started in-process on an ephemeral loopback port.
    Embedded,
    /// A discovery URL (checked: https, or http on a loopback host).
    Url(url::Url),
}
