//! The event channel loop: P-GET, hand the batch's events to the scripts, follow `next`
//! (PROTOCOL.md §4), and recover from every failure the pool or the network can produce.
//!
//! | what happens                          | what the loop does                                         |
//! |---------------------------------------|------------------------------------------------------------|
//! | 200 with `next`                        | journal and deliver the events, follow `next` (acks it)     |
//! | 200 with `resync` / `resume`           | deliver any events, tell scripts (`agent`/`resync`), follow |
//! | 200 that is not a batch (bad JSON…)    | log, back off, poll the same ack again                     |
//! | 200 with an event that cannot be read  | log and count it, deliver the others, follow `next`         |
//! | 409 PGetReplaced                       | log (another poll exists), back off, same ack again        |
//! | 404 / 410                              | the application is gone: end with `ApplicationGone`        |
//! | 401 (after the session's one retry)    | back off, same ack again (the session signs in anew)       |
//! | 5xx, 429, reset, timeout               | back off (honouring `Retry-After`), same ack again          |
//!
//! A batch is journaled with the href to poll next in one transaction before that href is
//! followed (a journal error means: poll the same ack again). Events are handed over (queued per
//! script) before the next P-GET is sent; handlers run in
//! the scripts' own tasks, so a slow handler never holds the channel.

use super::backoff::Backoff;
use super::sink::EventSink;
use crate::metrics::{HealthState, Metrics};
use crate::ucwa::{batch, Continuation, Session, UcwaError};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;

/// Why the channel loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelEnd {
    /// Shutdown was asked for.
    Shutdown,
    /// The application is gone (404/410, or the server pointed the channel off the pool).
    ApplicationGone,
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// UCWA's `timeout` query parameter: how long the server may hold each P-GET.
    pub poll_timeout: Duration,
    /// The cap of the exponential backoff.
    pub max_backoff: Duration,
}

/// The client's HTTP timeout is longer than the time it asks the server to hold the request.
fn http_timeout(poll_timeout: Duration) -> Duration {
    poll_timeout + Duration::from_secs(30)
}

/// Adds `timeout=` to a server-given href with a URL builder, keeping the server's parameters.
fn with_timeout(href: &str, session: &Session, poll_timeout: Duration) -> Result<String, UcwaError> {
    let mut url = session.origin().resolve(href)?;
    let kept: Vec<(String, String)> = url.query_pairs().filter(|(k, _)| k != "timeout").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair("timeout", &poll_timeout.as_secs().to_string());
    Ok(url.to_string())
}

/// Polls from `href` until shutdown or until the application is gone.
pub async fn run(
    session: &Session,
    mut href: String,
    settings: &ChannelSettings,
    sink: &mut EventSink,
    stop: &mut watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<ChannelEnd, UcwaError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), settings.max_backoff);
    loop {
        if *stop.borrow() {
            return Ok(ChannelEnd::Shutdown);
        }
        let url = match with_timeout(&href, session, settings.poll_timeout) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "the event channel link leaves the pool; creating a new application");
                return Ok(ChannelEnd::ApplicationGone);
            }
        };
        metrics.poll();
        // Parked until the reply or the limit, whichever comes first, without waking to say
        // it is alive (systemd's watchdog, `Lifecycle::alive`): a thousand idle accounts cost
        // no wake-up a second. The limit makes the wait end by itself, so a loop whose timer
        // fired and that did not run is a wedged one.
        let limit = request_limit(settings.poll_timeout);
        metrics.loop_parked(limit);
        let sent = tokio::time::timeout(limit, session.send(Method::GET, &url, None, Some(http_timeout(settings.poll_timeout))));
        let reply = tokio::select! {
            r = sent => r.unwrap_or_else(|_| Err(UcwaError::Transport {
                method: "GET".into(),
                url: url.clone(),
                message: format!("no reply within {} s (the request, its token's renewal and its one retry)", limit.as_secs()),
            })),
            _ = stop.changed() => return Ok(ChannelEnd::Shutdown),
        };
        metrics.loop_busy();
        let retry_after = match reply {
            Ok(reply) if reply.status == 200 => match batch::parse(&reply.body, session.origin()) {
                Ok(b) => {
                    sink.record(&reply.body);
                    for problem in &b.skipped {
                        tracing::warn!(href = %href, problem = %problem, "skipped an event the pool sent malformed; delivering the rest of the batch");
                    }
                    if b.skipped_more > 0 {
                        tracing::warn!(href = %href, more = b.skipped_more, "skipped more malformed events of the batch, not told one by one");
                    }
                    metrics.recoveries("malformed_event", b.skipped.len() + b.skipped_more);
                    let (next, lost) = match b.continuation {
                        Continuation::Next(h) => (h, None),
                        Continuation::Resync(h) => (h, Some("resync")),
                        Continuation::Resume(h) => (h, Some("resume")),
                    };
                    match sink.deliver(session.origin(), &reply.body, b.events, Some(&next)) {
                        Ok(()) => {
                            backoff.reset();
                            metrics.set_health(HealthState::Polling, None);
                            if let Some(reason) = lost {
                                metrics.recovery(reason);
                                tracing::warn!(href = %next, reason, "event channel lost its place: events may have been missed");
                                sink.synthetic("resync", json!({"reason": reason}));
                            }
                            href = next;
                            continue;
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot journal the batch; polling the same ack again");
                            metrics.recovery("journal_error");
                            metrics.set_health(HealthState::Recovering, Some(error.to_string()));
                            None
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(href = %href, %error, "malformed event-channel reply; polling the same ack again");
                    metrics.recovery("malformed_reply");
                    metrics.set_health(HealthState::Recovering, Some(error));
                    None
                }
            },
            Ok(reply) => {
                let e = crate::ucwa::session::status_error(&Method::GET, &url, &reply);
                if e.application_gone() {
                    tracing::warn!(error = %e, "the application is gone");
                    metrics.recovery("application_gone");
                    return Ok(ChannelEnd::ApplicationGone);
                }
                if e.status() == Some(409) {
                    tracing::warn!(error = %e, "our pending GET was replaced: another client may be using this application");
                } else {
                    tracing::warn!(error = %e, "event channel request failed; retrying the same ack");
                }
                metrics.recovery(match e.status() {
                    Some(409) => "pget_replaced",
                    Some(401) | Some(403) => "unauthorized",
                    Some(429) => "throttled",
                    _ => "server_error",
                });
                metrics.set_health(HealthState::Recovering, Some(e.to_string()));
                e.retry_after()
            }
            Err(e) if e.needs_sign_in() => return Err(e),
            Err(e @ UcwaError::Malformed { .. }) => {
                tracing::warn!(error = %e, "unreadable event-channel reply; polling the same ack again");
                metrics.recovery("malformed_reply");
                metrics.set_health(HealthState::Recovering, Some(e.to_string()));
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "event channel request failed; retrying the same ack");
                metrics.recovery("transport");
                metrics.set_health(HealthState::Recovering, Some(e.to_string()));
                None
            }
        };
        let delay = backoff.next_delay(retry_after);
        tracing::debug!(delay_ms = delay.as_millis() as u64, attempt = backoff.attempt(), "backing off");
        metrics.loop_parked(delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Ok(ChannelEnd::Shutdown),
        }
        metrics.loop_busy();
    }
}

/// The most one P-GET may take, from sending it to its reply: its HTTP timeout twice (the
/// session retries once after renewing a rejected token) and a minute for the renewal.
fn request_limit(poll_timeout: Duration) -> Duration {
    http_timeout(poll_timeout) * 2 + Duration::from_secs(60)
}
