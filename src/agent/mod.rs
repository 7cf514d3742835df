//! The agent: sign in, create the application, keep it alive, poll its event channel, and hand
//! every event to the scripts, recovering from failures until shut down.

pub mod backoff;
pub mod channel;
pub mod endpoints;
pub mod keepalive;
pub mod record;
pub mod refusal;
mod reload;

pub use reload::{LogLevelApplier, Reloader};
pub mod sink;

use crate::config::{Config, Discover};
use crate::script::{watch_dir, ScriptEnv, ScriptHost};
use crate::sim::{Simulator, DEMO_PASSWORD, DEMO_USER};
use crate::metrics::HealthState;
use crate::store::{Position, Store};
use crate::ucwa::application::{self, Application, Availability};
use crate::ucwa::signin::sign_in;
use crate::config::AuthKind;
use crate::ucwa::{session::http_client, Auth, Secret, Session, TokenSource, UcwaError};
use backoff::Backoff;
use channel::{ChannelEnd, ChannelSettings};
use serde_json::json;
use sink::EventSink;
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
    #[error("{file}: `auth.password_env`: the environment variable `{var}` is not set (it must hold the password)")]
    PasswordMissing { file: String, var: String },
    #[error("{file}: `scripts.dir`: cannot read {dir}: {source}")]
    ScriptsDir { file: String, dir: String, source: std::io::Error },
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

/// How long running handlers may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A configured agent, scripts loaded, not yet signed in.
pub struct Agent {
    config: Config,
    host: ScriptHost,
    store: Arc<Store>,
    discover: Url,
    auth: Auth,
    /// The client every pool request goes through (with `server.ca_file`'s CAs).
    http: reqwest::Client,
    /// The in-process simulator of `discover = "embedded"`; it lives as long as the agent.
    simulator: Option<Simulator>,
    watcher: Option<crate::script::watch::WatchHandle>,
    /// The `/metrics` endpoint's address and task, when `[metrics] listen` is set.
    endpoints: endpoints::EndpointSlot,
    /// Set by the binary: how a reload changes the log filter.
    log_level: Option<reload::LogLevelApplier>,
    /// This agent's hold on `state.dir`, for as long as it lives.
    _lock: crate::store::DirLock,
    /// `--record FILE`.
    recorder: Option<record::Recorder>,
}

impl Agent {
    /// Checks the configuration, starts the embedded simulator if asked, loads the scripts.
    /// Scripts that fail to load are logged and skipped; the agent starts anyway.
    pub async fn start(config: Config) -> Result<Agent, StartError> {
        let file = config.path.display().to_string();
        // Two agents on one state directory would fight over one application and journal.
        let lock = crate::store::DirLock::acquire(&config.state_dir()).map_err(|source| StartError::Locked { file: file.clone(), source })?;
        let Pool { discover, auth, http, simulator } = Pool::of(&config).await?;
        let store = Arc::new(Store::open(&config.state_dir()).map_err(|source| StartError::State { file: file.clone(), source })?);
        let env = ScriptEnv::new(config.script_settings(), store.clone());
        let dir = config.scripts_dir();
        let host = ScriptHost::with_env(dir.clone(), env);
        let failed = host.load_dir().await.map_err(|source| StartError::ScriptsDir {
            file: file.clone(),
            dir: dir.display().to_string(),
            source,
        })?;
        tracing::info!(dir = %dir.display(), loaded = host.scripts().len(), failed = failed.len(), "scripts loaded");
        let watcher = if config.scripts.watch {
            let debounce = Duration::from_millis(config.scripts.reload_debounce_ms);
            Some(watch_dir(host.clone(), debounce).map_err(|source| StartError::Watch { dir: dir.display().to_string(), source })?)
        } else {
            None
        };
        let endpoints = match config.metrics.listen {
            Some(addr) => Some(
                endpoints::serve(addr, host.clone()).await.map_err(|source| StartError::Metrics { file: file.clone(), addr, source })?,
            ),
            None => None,
        };
        let endpoints = Arc::new(std::sync::Mutex::new(endpoints));
        Ok(Agent { config, host, store, discover, auth, http, simulator, watcher, endpoints, log_level: None, recorder: None, _lock: lock })
    }

    /// The scripts (subscribe to their output, load more).
    pub fn scripts(&self) -> &ScriptHost {
        &self.host
    }

    /// Appends every batch received to `path` (JSON Lines) for `replay`.
    pub fn record_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        self.recorder = Some(record::Recorder::open(path)?);
        tracing::info!(file = %path.display(), "recording every event-channel batch (JSON Lines, for `replay`)");
        Ok(())
    }

    /// Re-reads the configuration file for the `[scripts]` keys (on SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            running: Arc::new(std::sync::Mutex::new(self.config.clone())),
            host: self.host.clone(),
            endpoints: self.endpoints.clone(),
            log_level: self.log_level.clone(),
        }
    }

    /// How a reload that changes `log.level` sets the log filter (the binary owns logging).
    pub fn set_log_level_applier(&mut self, apply: reload::LogLevelApplier) {
        self.log_level = Some(apply);
    }

    /// Where `/metrics` and `/healthz` listen, when enabled.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoints.lock().expect("endpoint slot lock").as_ref().map(|(a, _)| *a)
    }

    /// The embedded simulator, when `discover = "embedded"`.
    pub fn simulator(&self) -> Option<&Simulator> {
        self.simulator.as_ref()
    }

    /// Runs until `shutdown` completes: then stops polling, lets handlers finish (bounded) and
    /// deletes the application. Also ends when the pool refused the credentials
    /// [`MAX_CREDENTIAL_REFUSALS`] times in a row.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> RunEnd {
        let (stop_tx, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let http = self.http.clone();
        let settings = ChannelSettings {
            poll_timeout: Duration::from_secs(self.config.server.poll_timeout_secs),
            max_backoff: Duration::from_secs(self.config.server.max_backoff_secs),
        };
        let mut sink = EventSink::new(self.host.clone(), self.store.clone(), self.config.state.journal_max_events);
        sink.prune();
        if let Some(r) = self.recorder.take() {
            sink.record_to(r);
        }
        let slot = self.host.env().session.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), settings.max_backoff);
        let metrics = self.host.env().metrics.clone();
        let state_dir = self.config.state_dir();
        if let Some(r) = refusal::recorded(&state_dir, &self.auth) {
            tracing::error!(
                user = %self.auth.user(),
                refused_at = %r.at,
                reason = %r.reason,
                file = %r.file.display(),
                "the pool refused this password before; not trying it again (an account lockout) until it changes: fix [auth] or the secret, or delete the file"
            );
            self.host.shutdown(SHUTDOWN_GRACE).await;
            return RunEnd::CredentialsRefused(r.reason);
        }
        let mut refusals = Refusals::default();
        let mut end = RunEnd::Stopped;
        'sign_in: while !*stop.borrow() {
            metrics.set_health(HealthState::SigningIn, None);
            let signed = tokio::select! {
                r = sign_in(&http, &self.discover, &self.auth, Some(metrics.clone())) => r,
                _ = stop.changed() => break,
            };
            let signed = match signed {
                Ok(s) => s,
                Err(error) => {
                    if let Some(given_up) = refusals.count(&error) {
                        end = given_up;
                        break;
                    }
                    tracing::error!(%error, discover = %self.discover, "sign-in failed; retrying");
                    metrics.set_health(HealthState::SigningIn, Some(error.to_string()));
                    if !pause(&mut backoff, error.retry_after(), &mut stop).await {
                        break;
                    }
                    continue;
                }
            };
            let session = signed.session;
            refusals = Refusals::default();
            refusal::clear(&state_dir);
            tracing::info!(pool = session.origin().as_str(), user = %self.auth.user(), "signed in");
            slot.set(Some(session.clone()));
            metrics.sign_in();
            // Why the next application is a new one, when the channel says so (told to scripts).
            let mut why_new: Option<&'static str> = None;
            loop {
                let app = tokio::select! {
                    r = self.open_application(&session, &signed.applications_href, &mut sink, why_new.take()) => r,
                    _ = stop.changed() => break 'sign_in,
                };
                let app = match app {
                    Ok(app) => app,
                    Err(error) => {
                        if let Some(given_up) = refusals.count(&error) {
                            end = given_up;
                            break 'sign_in;
                        }
                        tracing::error!(%error, "cannot create the application; retrying");
                        metrics.set_health(HealthState::SigningIn, Some(error.to_string()));
                        if !pause(&mut backoff, error.retry_after(), &mut stop).await {
                            break 'sign_in;
                        }
                        if error.needs_sign_in() {
                            continue 'sign_in;
                        }
                        continue;
                    }
                };
                backoff.reset();
                let (app, resumed) = app;
                sink.set_position(Some(Position {
                    pool: session.origin().as_str().to_string(),
                    user: self.auth.user().to_string(),
                    application: app.self_href.clone(),
                    report_activity: app.report_activity.clone().unwrap_or_default(),
                    next: app.events_href.clone(),
                }));
                self.host.env().application.set(Some(session.origin().absolute(&app.self_href)));
                sink.synthetic(
                    "signedIn",
                    json!({"application": session.origin().absolute(&app.self_href), "resumed": resumed}),
                );
                let keepalive = keepalive::spawn(session.clone(), app.clone(), Duration::from_secs(self.config.server.keepalive_secs));
                metrics.set_health(HealthState::Polling, None);
                let channel_end = channel::run(&session, app.events_href.clone(), &settings, &mut sink, &mut stop, &metrics).await;
                keepalive.abort();
                match channel_end {
                    Ok(ChannelEnd::Shutdown) => {
                        // Polling has stopped. Scripts finish what they have (signedOut last),
                        // still able to call UCWA; then the application goes.
                        sink.synthetic("signedOut", json!({"reason": "shutdown"}));
                        metrics.set_health(HealthState::Stopping, None);
                        self.host.shutdown(SHUTDOWN_GRACE).await;
                        let deleted = tokio::time::timeout(Duration::from_secs(5), application::delete(&session, &app)).await;
                        match deleted {
                            Ok(Ok(())) => tracing::info!(application = %app.self_href, "application deleted"),
                            Ok(Err(error)) => tracing::warn!(%error, "could not delete the application"),
                            Err(_) => tracing::warn!("deleting the application timed out"),
                        }
                        sink.set_position(None);
                        break 'sign_in;
                    }
                    Ok(ChannelEnd::ApplicationGone) => {
                        tracing::warn!("creating a new application; scripts get a resync event");
                        sink.set_position(None);
                        why_new = Some("the application is gone (deleted or expired on the pool)");
                        self.host.env().application.set(None);
                    }
                    Err(error) => {
                        slot.set(None);
                        self.host.env().application.set(None);
                        sink.synthetic("signedOut", json!({"reason": error.to_string()}));
                        if let Some(given_up) = refusals.count(&error) {
                            end = given_up;
                            break 'sign_in;
                        }
                        tracing::error!(%error, "signed out; signing in again");
                        continue 'sign_in;
                    }
                }
            }
        }
        metrics.set_health(HealthState::Stopping, None);
        self.host.shutdown(SHUTDOWN_GRACE).await;
        drop(self.watcher);
        endpoints::replace(&self.endpoints, None);
        if let Some(sim) = self.simulator {
            sim.shutdown().await;
        }
        if let RunEnd::CredentialsRefused(reason) = &end {
            refusal::record(&state_dir, &self.auth, reason);
        }
        tracing::info!("agent stopped");
        end
    }

    /// Resumes the application of the saved position if the pool still has it (a restart
    /// within its lifetime loses nothing); otherwise creates (or re-attaches to) one and makes
    /// it available. Returns the application and whether it was resumed.
    /// Says (WARN, /healthz) when incoming calls cannot arrive, and clears it when they can.
    fn note_availability(&self, app: &Application, availability: &Availability) {
        let metrics = &self.host.env().metrics;
        match availability {
            Availability::Unavailable(why) => {
                tracing::warn!(application = %app.self_href, reason = %why, "makeMeAvailable cannot be done: incoming calls will not arrive");
                metrics.set_warning("make_me_available", Some(format!("not available for incoming calls: {why}")));
            }
            _ => metrics.set_warning("make_me_available", None),
        }
    }

    async fn open_application(
        &self,
        session: &Session,
        applications_href: &str,
        sink: &mut EventSink,
        why_new: Option<&'static str>,
    ) -> Result<(Application, bool), UcwaError> {
        let saved = self.store.position().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot read the saved channel position");
            None
        });
        let mut stale = why_new;
        if let Some(p) = saved.filter(|p| p.pool == session.origin().as_str() && p.user == self.auth.user()) {
            match session.get_json(&p.application).await {
                Ok(resource) => {
                    tracing::info!(application = %p.application, next = %p.next, "resuming the saved application's event channel");
                    let app = Application::resumed(&resource, &p.application, p.next)?;
                    // Available still? (A crash may have come before makeMeAvailable, or the
                    // pool may offer none: /healthz says so again.)
                    let (app, availability) = application::make_me_available(session, &app, &self.config.server.modalities).await?;
                    self.note_availability(&app, &availability);
                    return Ok((app, true));
                }
                Err(e) if e.application_gone() => {
                    tracing::warn!(application = %p.application, "the saved application is gone; creating a new one");
                    sink.set_position(None);
                    stale = Some("the application was gone while the agent was stopped");
                }
                Err(e) => return Err(e),
            }
        }
        // Scripts that have seen events before may hold calls in progress that ended unseen:
        // any new application after the first (a graceful stop deleted the last one, a crash,
        // another pool) says so.
        if stale.is_none() && self.store.head().unwrap_or(0) > 0 {
            stale = Some("a new application: events between the previous one and this one were not received");
        }
        let endpoint = self.config.server.endpoint_id.clone().unwrap_or_else(|| endpoint_id_for(self.auth.user()));
        let app = application::create(session, applications_href, &self.config.server.user_agent, &endpoint).await?;
        let (app, availability) = application::make_me_available(session, &app, &self.config.server.modalities).await?;
        self.note_availability(&app, &availability);
        tracing::info!(application = %app.self_href, endpoint_id = %endpoint, ?availability, "application ready");
        if let Some(reason) = stale {
            tracing::info!(reason, "scripts get a resync event");
            sink.synthetic("resync", json!({ "reason": reason }));
        }
        Ok((app, false))
    }
}

/// What signing in needs, from the configuration: where to discover the pool (starting the
/// embedded simulator for `discover = "embedded"`), the credentials and the HTTP client.
pub struct Pool {
    pub discover: Url,
    pub auth: Auth,
    pub http: reqwest::Client,
    /// The embedded simulator, when that is the pool; it serves as long as this lives.
    pub simulator: Option<Simulator>,
}

impl Pool {
    pub async fn of(config: &Config) -> Result<Pool, StartError> {
        let file = config.path.display().to_string();
        let (discover, simulator) = match config.discover()? {
            Discover::Embedded => {
                let listen = config.simulator.listen.unwrap_or(([127, 0, 0, 1], 0).into());
                let sim = Simulator::start(config.embedded_simulator(), listen)
                    .await
                    .map_err(|source| StartError::Simulator { file: file.clone(), listen, source })?;
                (Url::parse(&sim.discovery_url()).expect("the simulator's URL parses"), Some(sim))
            }
            Discover::Url(url) => (url, None),
        };
        let auth = match &config.auth {
            Some(a) => auth_of(config, &file, a)?,
            None => Auth::Password { username: DEMO_USER.into(), password: Secret::new(DEMO_PASSWORD) },
        };
        let ca = match &config.server.ca_file {
            Some(p) => Some(std::fs::read(config.resolve(p)).map_err(|e| StartError::CaFile { file: file.clone(), message: e.to_string() })?),
            None => None,
        };
        let http = http_client(ca.as_deref()).map_err(|message| StartError::CaFile { file, message })?;
        Ok(Pool { discover, auth, http, simulator })
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
struct Refusals(u32);

impl Refusals {
    /// Counts `error` if it is a refusal; at the limit, says so (one ERROR line) and gives the end.
    fn count(&mut self, error: &UcwaError) -> Option<RunEnd> {
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
async fn pause(backoff: &mut Backoff, retry_after: Option<Duration>, stop: &mut watch::Receiver<bool>) -> bool {
    let delay = backoff.next_delay(retry_after);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
    }
}

/// The configured way to authenticate; the password is read from its variable now, so a
/// missing one stops the agent at start.
fn auth_of(config: &Config, file: &str, a: &crate::config::AuthConfig) -> Result<Auth, StartError> {
    let user = a.username.clone().unwrap_or_else(|| "bearer".into());
    Ok(match a.kind {
        AuthKind::Password => {
            let var = a.password_env.clone().expect("checked by Config::check");
            match std::env::var(&var) {
                Ok(p) if !p.is_empty() => Auth::Password { username: user, password: Secret::new(p) },
                _ => return Err(StartError::PasswordMissing { file: file.to_string(), var }),
            }
        }
        AuthKind::Bearer => {
            let source = if let Some(v) = &a.token_env {
                TokenSource::Env(v.clone())
            } else if let Some(p) = &a.token_file {
                TokenSource::File(config.resolve(p))
            } else {
                TokenSource::Command(a.token_command.clone().expect("checked by Config::check"))
            };
            Auth::Bearer { user, source }
        }
    })
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
