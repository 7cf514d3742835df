//! One account: its sign-in, application, event channel, recovery, journal, cursors and
//! scripts. An agent runs one per account (`agent/run.rs`); what happens to one account
//! (credentials refused, its pool down, faults on its channel) never reaches another.

use super::backoff::{pause, Backoff};
use super::channel::{self, ChannelEnd, ChannelSettings};
use super::end::{Refusals, RunEnd, StartError, SHUTDOWN_GRACE};
use super::pool::{auth_for, Shared};
use super::sink::EventSink;
use super::{keepalive, record, refusal};
use crate::config::{AccountSpec, Config, Discover, Missing, ServerConfig};
use crate::metrics::HealthState;
use crate::script::{AccountInfo, ScriptEnv, ScriptHost};
use crate::store::{Position, Store};
use crate::ucwa::application::endpoint_id_for;
use crate::ucwa::application::{self, Application, Availability};
use crate::ucwa::signin::sign_in;
use crate::ucwa::{Auth, Session, UcwaError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;
use url::Url;

/// An account, scripts loaded, not yet signed in.
pub struct Account {
    pub(crate) spec: AccountSpec,
    host: ScriptHost,
    store: Arc<Store>,
    discover: Url,
    auth: Auth,
    http: reqwest::Client,
    server: ServerConfig,
    journal_max_events: u64,
    /// Hot reload of the account's own `scripts_dir` (the shared one is the agent's).
    _watcher: Option<crate::script::watch::WatchHandle>,
    /// This account's hold on its state folder, for as long as it lives.
    _lock: crate::store::DirLock,
}

impl Account {
    /// Locks and opens the account's state, loads its scripts (those that fail are logged and
    /// skipped).
    pub(crate) async fn open(spec: AccountSpec, config: &Config, shared: &Shared) -> Result<Account, StartError> {
        let file = config.path.display().to_string();
        Account::preflight(&spec, config)?;
        let span = match &spec.name {
            // At ERROR level: enabled whatever level the filter lets through, so even a
            // `warn` line names its account.
            Some(name) => tracing::error_span!(target: "ucwa_agent", "account", account = %name),
            None => tracing::Span::none(),
        };
        // Two agents on one state folder would fight over one application and journal.
        let lock = crate::store::DirLock::acquire(&spec.state_dir).map_err(|source| StartError::Locked { file: file.clone(), source })?;
        let store = Arc::new(Store::open(&spec.state_dir).map_err(|source| StartError::State { file: file.clone(), source })?);
        let discover = match &spec.discover {
            Discover::Embedded => shared.embedded.clone().expect("the embedded simulator runs when an account uses it"),
            Discover::Url(url) => url.clone(),
        };
        let auth = auth_for(&spec, config)?;
        let info = AccountInfo { name: spec.label().to_string(), uri: spec.uri() };
        let env = ScriptEnv::new(config.script_settings(), store.clone()).for_account(info, span.clone()).with_http(shared.outbound.clone());
        env.metrics.script_defined.lock().unwrap_or_else(std::sync::PoisonError::into_inner).share_budget(shared.metric_bytes.clone());
        let host = ScriptHost::with_dirs(spec.scripts_dirs.clone(), env);
        let dir = spec.scripts_dirs[0].clone();
        let failed = host.load_dir().instrument(span.clone()).await.map_err(|source| StartError::ScriptsDir {
            file: file.clone(),
            dir: dir.display().to_string(),
            source,
        })?;
        span.in_scope(|| tracing::info!(dirs = ?spec.scripts_dirs, loaded = host.scripts().len(), failed = failed.len(), "scripts loaded"));
        let watcher = match spec.scripts_dirs.get(1).filter(|_| config.scripts.watch) {
            Some(own) => {
                let debounce = Duration::from_millis(config.scripts.reload_debounce_ms);
                let target = host.clone();
                // (In the account's span: the watcher's task keeps it, so its lines name the account.)
                let w = span.in_scope(|| crate::script::watch::watch(own.clone(), Arc::new(move || vec![target.clone()]), debounce));
                Some(w.map_err(|source| StartError::Watch { dir: own.display().to_string(), source })?)
            }
            None => None,
        };
        Ok(Account {
            spec,
            host,
            store,
            discover,
            auth,
            http: shared.http.clone(),
            server: config.server.clone(),
            journal_max_events: config.state.journal_max_events,
            _watcher: watcher,
            _lock: lock,
        })
    }

    /// What `open` needs from outside the file, checked without taking anything: the account's
    /// part of `Config::surroundings` (the list `check` reports from), the first problem as the
    /// error; then its credentials as `open` reads them.
    pub(crate) fn preflight(spec: &AccountSpec, config: &Config) -> Result<(), StartError> {
        let file = config.path.display().to_string();
        if let Some(missing) = config.account_surroundings(spec).into_iter().next() {
            return Err(match missing {
                Missing::PasswordEnv { key, var } => StartError::PasswordMissing { file, key, var },
                Missing::AccountScriptsDir { key, dir, source } => StartError::AccountScriptsDir { file, key, dir: dir.display().to_string(), source },
                other => StartError::Missing { file, key: other.key().to_string(), message: other.message() },
            });
        }
        auth_for(spec, config)?;
        Ok(())
    }

    pub fn scripts(&self) -> &ScriptHost {
        &self.host
    }

    /// Runs until `stop` turns true: then stops polling, lets handlers finish (bounded) and
    /// deletes the application. Also ends when the pool refused the credentials
    /// [`super::end::MAX_CREDENTIAL_REFUSALS`] times in a row.
    pub(crate) async fn run(self, stop: watch::Receiver<bool>, recorder: Option<record::Recorder>) -> RunEnd {
        let span = self.host.env().span.clone();
        self.run_inner(stop, recorder).instrument(span).await
    }

    async fn run_inner(self, mut stop: watch::Receiver<bool>, mut recorder: Option<record::Recorder>) -> RunEnd {
        let http = self.http.clone();
        let settings = ChannelSettings {
            poll_timeout: Duration::from_secs(self.server.poll_timeout_secs),
            max_backoff: Duration::from_secs(self.server.max_backoff_secs),
        };
        let mut sink = EventSink::new(self.host.clone(), self.store.clone(), self.journal_max_events);
        sink.prune();
        if let Some(r) = recorder.take() {
            sink.record_to(r);
        }
        let slot = self.host.env().session.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), settings.max_backoff);
        let metrics = self.host.env().metrics.clone();
        let state_dir = self.spec.state_dir.clone();
        if let Some(r) = refusal::recorded(&state_dir, &self.auth) {
            tracing::error!(
                user = %self.auth.user(),
                refused_at = %r.at,
                reason = %r.reason,
                file = %r.file.display(),
                "the pool refused this password before; not trying it again until it changes (retrying a refused password can get the account locked out): fix [auth] or the secret, or delete the file"
            );
            self.host.shutdown(SHUTDOWN_GRACE).await;
            metrics.set_health(HealthState::Stopped, Some(format!("credentials refused before ({}), not tried again: {}", r.at, r.reason)));
            return RunEnd::CredentialsRefused(r.reason);
        }
        let mut refusals = Refusals::default();
        let mut end = RunEnd::Stopped;
        // Applications lost one after another (404s, a `next` off the pool) are re-created
        // with backoff like any failure; one that lived a while starts the count again.
        let mut losses = Backoff::new(Duration::from_secs(1), settings.max_backoff);
        let mut opened;
        'sign_in: while !*stop.borrow() {
            metrics.set_health(HealthState::SigningIn, None);
            let signed = tokio::select! {
                r = async {
                    let _turn = super::admission::turn().await;
                    sign_in(&http, &self.discover, &self.auth, Some(metrics.clone())).await
                } => r,
                _ = stop.changed() => break,
            };
            let signed = match signed {
                Ok(s) => s,
                Err(error) => {
                    if let Some(given_up) = refusals.count(&error) {
                        end = given_up;
                        break;
                    }
                    let delay = backoff.next_delay(error.retry_after());
                    tracing::error!(%error, discover = %self.discover, retry_in_ms = delay.as_millis() as u64, "sign-in failed; retrying");
                    metrics.set_health(HealthState::SigningIn, Some(error.to_string()));
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(delay) => false,
                        _ = stop.changed() => true,
                    };
                    if stopped {
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
                    r = async {
                        let _turn = super::admission::turn().await;
                        self.open_application(&session, &signed.applications_href, &mut sink, why_new.take()).await
                    } => r,
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
                opened = tokio::time::Instant::now();
                metrics.application_created();
                let (app, resumed) = app;
                sink.set_position(Some(Position {
                    pool: session.origin().as_str().to_string(),
                    user: self.auth.user().to_string(),
                    application: app.self_href.clone(),
                    report_activity: app.report_activity.clone().unwrap_or_default(),
                    next: app.events_href.clone(),
                }));
                self.host.env().application.set(Some(session.origin().absolute(&app.self_href)));
                sink.synthetic("signedIn", json!({"application": session.origin().absolute(&app.self_href), "resumed": resumed}));
                let keepalive = keepalive::spawn(session.clone(), app.clone(), Duration::from_secs(self.server.keepalive_secs));
                // The scripts' watched contacts, subscribed on this application (and kept so).
                let presence = super::presence::spawn(session.clone(), app.self_href.clone(), self.host.clone());
                metrics.set_health(HealthState::Polling, None);
                let channel_end = channel::run(&session, app.events_href.clone(), &settings, &mut sink, &mut stop, &metrics).await;
                keepalive.abort();
                presence.abort();
                match channel_end {
                    Ok(ChannelEnd::Shutdown) => {
                        // Polling has stopped. Scripts finish what they have (signedOut last),
                        // still able to call UCWA; then the application goes.
                        sink.synthetic("signedOut", json!({"reason": "shutdown"}));
                        metrics.set_health(HealthState::Stopping, None);
                        self.host.shutdown(SHUTDOWN_GRACE).await;
                        let deleted = tokio::time::timeout(Duration::from_secs(5), application::delete(&session, &app)).await;
                        match deleted {
                            Ok(Ok(())) => {
                                tracing::info!(application = %app.self_href, "application deleted")
                            }
                            Ok(Err(error)) => {
                                tracing::warn!(%error, "could not delete the application")
                            }
                            Err(_) => tracing::warn!("deleting the application timed out"),
                        }
                        sink.set_position(None);
                        break 'sign_in;
                    }
                    Ok(ChannelEnd::ApplicationGone) => {
                        sink.set_position(None);
                        why_new = Some("the application is gone (deleted or expired on the pool)");
                        self.host.env().application.set(None);
                        if opened.elapsed() >= STABLE_APPLICATION {
                            losses.reset();
                        }
                        tracing::warn!(lost_in_a_row = losses.attempt() + 1, "creating a new application; scripts get a resync event");
                        if !pause(&mut losses, None, &mut stop).await {
                            break 'sign_in;
                        }
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
        if let RunEnd::CredentialsRefused(reason) = &end {
            refusal::record(&state_dir, &self.auth, reason);
            metrics.set_health(HealthState::Stopped, Some(reason.clone()));
        }
        tracing::info!("account stopped");
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
                    let (app, availability) = application::make_me_available(session, &app, &self.server.modalities).await?;
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
        let endpoint = self.server.endpoint_id.clone().unwrap_or_else(|| endpoint_id_for(self.auth.user()));
        let app = application::create(session, applications_href, &self.server.user_agent, &endpoint).await?;
        let (app, availability) = application::make_me_available(session, &app, &self.server.modalities).await?;
        self.note_availability(&app, &availability);
        tracing::info!(application = %app.self_href, endpoint_id = %endpoint, ?availability, "application ready");
        if let Some(reason) = stale {
            tracing::info!(reason, "scripts get a resync event");
            sink.synthetic("resync", json!({ "reason": reason }));
        }
        Ok((app, false))
    }
}

/// An application that lived this long before it was lost was not lost "again and again":
/// the next one is created at once.
const STABLE_APPLICATION: Duration = Duration::from_secs(60);
