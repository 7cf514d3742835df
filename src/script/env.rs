//! What scripts can reach, shared by every script of a host: the limits, the database, the
//! agent's UCWA session, the outbound HTTP allowlist, and each script's own config table.

use super::budget::Limits;
use super::offline::OfflineNet;
use super::output::ScriptOutput;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::ucwa::Session;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// The agent's current UCWA session (none before sign-in or between sessions).
#[derive(Clone, Default)]
pub struct SessionSlot(Arc<RwLock<Option<Arc<Session>>>>);

impl SessionSlot {
    pub fn set(&self, session: Option<Arc<Session>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = session;
    }

    pub fn get(&self) -> Option<Arc<Session>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The href of the agent's current application (what `agent.me`/`agent.calls` start from).
#[derive(Clone, Default)]
pub struct ApplicationSlot(Arc<RwLock<Option<String>>>);

impl ApplicationSlot {
    pub fn set(&self, href: Option<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = href;
    }

    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the account's presence subscription (`agent/presence.rs`) is told: the scripts'
/// watches changed (`agent.people.watch`), the pool says it is about to expire, or it may
/// have ended (a `presenceSubscription` `deleted` event, a resync).
#[derive(Default)]
pub struct WatchSignals {
    pub changed: tokio::sync::Notify,
    pub expiring: tokio::sync::Notify,
    pub lost: tokio::sync::Notify,
}

/// The settings from `[scripts]` that a SIGHUP may change (scripts reload to see them).
#[derive(Debug, Clone)]
pub struct ScriptSettings {
    pub limits: Limits,
    /// Hosts (`name` or `name:port`) that `agent.http.request` may reach.
    pub http_allow: Vec<String>,
    /// `[scripts.config.<name>]`, by script name.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Consecutive handler failures after which a script is paused until its file changes.
    pub max_consecutive_failures: u32,
    /// The largest `agent.state` (JSON bytes) a script may keep.
    pub state_max_bytes: usize,
    /// `agent.time.zone()` and the zone of schedules and business hours when a script names
    /// none: `[scripts] time_zone`, else the system's.
    pub time_zone: jiff::tz::TimeZone,
    /// `[scripts.calendars]`: holiday calendars by name, read with the configuration.
    pub calendars: BTreeMap<String, Arc<super::calendar::Calendar>>,
    /// How many traces of its runs each script keeps (`script::trace`); 0: none are made.
    pub traces_per_script: usize,
    /// How many lines a script may log (`script::log_budget`): in `run`; None (no limit) in the
    /// offline tools, whose output is what their user asked to see.
    pub log_rate: Option<super::log_budget::LogRate>,
}

impl ScriptSettings {
    pub fn new(limits: Limits) -> ScriptSettings {
        ScriptSettings {
            limits,
            http_allow: Vec::new(),
            config: BTreeMap::new(),
            max_consecutive_failures: 10,
            state_max_bytes: 1 << 20,
            time_zone: super::zone::system(),
            calendars: BTreeMap::new(),
            traces_per_script: 0,
            log_rate: Some(super::log_budget::LogRate::DEFAULT),
        }
    }

    /// Whether `agent.http.request` may reach this URL's host.
    pub fn http_allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let port = url.port_or_known_default();
        self.http_allow.iter().any(|entry| match entry.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h.eq_ignore_ascii_case(host) && p.parse::<u16>().ok() == port,
            _ => entry.eq_ignore_ascii_case(host),
        })
    }
}

/// The time scripts see (`agent.now()`, timers): the system clock, or a manual one that only
/// moves when told (the `test` and `replay` commands, for deterministic runs).
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `ms` (milliseconds since the Unix epoch).
    pub fn manual(ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(ms)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64,
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward (a no-op on the system clock).
    pub fn advance(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms.max(0), Ordering::SeqCst);
        }
    }
}

/// Where `agent.ucwa.*` and `agent.http.request` go.
#[derive(Clone)]
pub enum Net {
    /// The agent's session and the outbound client.
    Live,
    /// Nowhere: recorded and answered offline.
    Offline(Arc<OfflineNet>),
}

/// The account a host's scripts serve (`agent.account`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// `default` for the single unnamed account.
    pub name: String,
    /// `sip:user@domain`, when the configuration names the user.
    pub uri: Option<String>,
}

impl Default for AccountInfo {
    fn default() -> Self {
        AccountInfo { name: "default".into(), uri: None }
    }
}

/// Everything a script host is configured with.
pub struct ScriptEnv {
    settings: RwLock<Arc<ScriptSettings>>,
    pub store: Arc<Store>,
    pub session: SessionSlot,
    pub application: ApplicationSlot,
    pub watches: Arc<WatchSignals>,
    /// The client for `agent.http.request` (no redirects, so the allowlist means what it says),
    /// built at first use unless given (`with_http`): a client holds its TLS roots, and an
    /// agent of many accounts shares one.
    http: std::sync::OnceLock<reqwest::Client>,
    /// What scripts do, for whoever subscribes; made at the first subscription (4,096 slots
    /// are about 0.5 MiB, and an agent of many accounts has no subscriber).
    output: std::sync::OnceLock<broadcast::Sender<ScriptOutput>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub net: Net,
    /// Report each event a script handles and each change of its `agent.state` on the output
    /// stream (`replay`, `test`).
    pub trace: bool,
    /// Secret references in `[scripts.config.*]` become `<secret:…>` placeholders instead of
    /// being read (`replay`, `test`: they never need a real secret, and never show one).
    pub secret_placeholders: bool,
    /// Also gets every output, without loss (`replay` collects its report here; the broadcast
    /// stream drops what a slow reader has not taken).
    pub collect: Option<tokio::sync::mpsc::UnboundedSender<ScriptOutput>>,
    /// The agent's runtime: scripts' requests run there, not on a script's thread (whose
    /// runtime has no I/O driver and may be stuck). `None` outside a runtime.
    pub io: Option<tokio::runtime::Handle>,
    /// Which account the scripts serve.
    pub account: AccountInfo,
    /// The taps reading the output stream (`listened`).
    taps: std::sync::atomic::AtomicUsize,
    /// Entered wherever this host's scripts run or are spoken of, so every log line names the
    /// account (`account = …`); none for the single unnamed account.
    pub span: tracing::Span,
    /// Each script's pause and last error, for the console.
    pub board: super::board::Board,
}

impl ScriptEnv {
    /// An environment with no session; `store` may be `Store::in_memory()`.
    pub fn new(settings: ScriptSettings, store: Arc<Store>) -> ScriptEnv {
        ScriptEnv {
            settings: RwLock::new(Arc::new(settings)),
            store,
            session: SessionSlot::default(),
            application: ApplicationSlot::default(),
            watches: Arc::default(),
            http: std::sync::OnceLock::new(),
            output: std::sync::OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            clock: Clock::System,
            net: Net::Live,
            trace: false,
            secret_placeholders: false,
            io: tokio::runtime::Handle::try_current().ok(),
            collect: None,
            account: AccountInfo::default(),
            span: tracing::Span::none(),
            taps: Default::default(),
            board: Default::default(),
        }
    }

    /// Serves `account`: `agent.account`, and its span on every log line of these scripts.
    pub fn for_account(mut self, account: AccountInfo, span: tracing::Span) -> ScriptEnv {
        self.account = account;
        self.span = span;
        self
    }

    /// Sends `agent.http.request` through `http` (one client shared by every account).
    pub fn with_http(self, http: reqwest::Client) -> ScriptEnv {
        let _ = self.http.set(http);
        self
    }

    /// The client for `agent.http.request`.
    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(outbound_client)
    }

    /// A version of `script` (from `file`) that could not be loaded or started, reported in the
    /// one way every such failure is: an ERROR line (the message's first line, the rest as
    /// `detail`; the version that keeps running, if any), the reload counted as failed, and
    /// `LoadFailed` on the output stream.
    pub(crate) fn load_failed(&self, script: &str, file: &std::path::Path, running_version: Option<u64>, message: &str) {
        let (first, rest) = message.split_once('\n').unwrap_or((message, ""));
        tracing::error!(script, file = %file.display(), running_version, detail = rest, "script not loaded: {first}");
        self.metrics.reload(script, false);
        self.emit(ScriptOutput::LoadFailed { script: script.to_string(), error: message.to_string() });
    }

    /// Reports what a script did on the output stream (and to `collect`).
    pub fn emit(&self, o: ScriptOutput) {
        if let Some(c) = &self.collect {
            let _ = c.send(o.clone());
        }
        if let Some(output) = self.output.get() {
            let _ = output.send(o);
        }
    }

    /// Whether a tap reads the output stream now: the events (`ScriptOutput::Received`) and
    /// every run's trace (`ScriptOutput::Trace`) are sent only then.
    pub fn listened(&self) -> bool {
        self.taps.load(Ordering::Relaxed) > 0
    }

    /// The output stream, with the events and every trace on it while the guard is held.
    pub fn tap(self: &Arc<Self>) -> (broadcast::Receiver<ScriptOutput>, TapGuard) {
        let rx = self.subscribe_output();
        self.taps.fetch_add(1, Ordering::Relaxed);
        (rx, TapGuard(self.clone()))
    }

    /// A stream of what the scripts do from now on.
    pub fn subscribe_output(&self) -> broadcast::Receiver<ScriptOutput> {
        self.output.get_or_init(|| broadcast::channel(4096).0).subscribe()
    }

    /// Runs `fut` on the agent's runtime and waits for it (from a script's thread).
    pub(crate) async fn on_io<T: Send + 'static>(&self, fut: impl std::future::Future<Output = T> + Send + 'static) -> mlua::Result<T> {
        match &self.io {
            Some(io) => io.spawn(fut).await.map_err(|e| mlua::Error::runtime(format!("the request task failed: {e}"))),
            None => Ok(fut.await),
        }
    }

    /// Whether scripts' errors go to the log: the offline tools (`replay`, `test`) print each one
    /// in their own output instead.
    pub(crate) fn logs_script_errors(&self) -> bool {
        self.collect.is_none() && !matches!(self.net, Net::Offline(_))
    }

    /// The settings as of now.
    pub fn settings(&self) -> Arc<ScriptSettings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New settings; scripts see them once reloaded.
    pub fn set_settings(&self, settings: ScriptSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }
}

/// A tap reading a host's output stream: counted while it lives.
pub struct TapGuard(Arc<ScriptEnv>);

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.0.taps.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client scripts' webhooks go through.
pub fn outbound_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ucwa-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the TLS backend initialises")
}
