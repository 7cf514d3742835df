//! `GET …/events?ack=N[&timeout=S][&priority=P]`: the pending GET (PROTOCOL.md §4): faults
//! injected by the control API first, then the channel's answer, or a park until events
//! arrive, a newer request replaces this one, or the timeout passes.

use super::channel::{PollKind, PollStep};
use super::fault::Fault;
use super::paths;
use super::quirks::Quirk;
use super::reply::{self, Reply};
use super::shared::{Answer, Req, Shared};
use super::state::Counters;
use axum::http::{header, StatusCode};
use std::sync::Arc;
use tokio::time::{Duration, Instant};

/// Forgets a parked P-GET whose client went away (the handler future was dropped).
struct ParkedGuard<'a> {
    shared: &'a Shared,
    app: u64,
    waiter: u64,
    armed: bool,
}

impl Drop for ParkedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            {
                let mut st = self.shared.lock();
                if let Some(app) = st.apps.get_mut(&self.app) {
                    app.channel.abandon(self.waiter, Instant::now());
                }
            }
        }
    }
}

/// `GET events?ack=N[&timeout=S][&priority=P]`: the pending GET (PROTOCOL.md §4).
pub(crate) async fn poll(shared: &Arc<Shared>, req: &Req, user: &str, app_id: u64) -> Answer {
    Counters::bump(&shared.counters.polls);
    let bad = |what: &str| Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), what);
    let Some(ack) = req.query.get("ack").and_then(|a| a.parse::<u64>().ok()) else {
        return bad("ack must be a number.").into();
    };
    let priority = match req.query.get("priority").map(|p| p.parse::<i64>()) {
        None => 0,
        Some(Ok(p)) => p,
        Some(Err(_)) => return bad("priority must be an integer.").into(),
    };
    let requested_timeout = match req.query.get("timeout").map(|t| t.parse::<u64>()) {
        None => None,
        Some(Ok(t)) => Some(Duration::from_secs(t).clamp(shared.config.min_poll_timeout, shared.config.max_poll_timeout)),
        Some(Err(_)) => return bad("timeout must be a number of seconds.").into(),
    };
    let app_gone = || Reply::error(StatusCode::NOT_FOUND, "NotFound", Some("ApplicationNotFound"), "The application does not exist.");
    let now = Instant::now();
    let (step, timeout) = {
        let mut st = shared.lock();
        st.expire_idle(&shared.config, now, &shared.counters);
        if st.app_of(app_id, user).is_none() {
            return app_gone().into();
        }
        // A pool that hands out `&key=` requires it back: a client must follow hrefs as given.
        if st.quirks.contains(&Quirk::EventsKey) && !req.query.contains_key("key") {
            return bad("The events href's key is missing: use the href the server gave.").into();
        }
        // The first fault meant for this account (or for any).
        let fault = st.take_fault(user);
        let app = st.app_of(app_id, user).expect("checked above");
        app.last_seen = now;
        if let Some(t) = requested_timeout {
            app.channel.timeout = t;
        }
        if let Some(fault) = fault {
            Counters::bump(&shared.counters.faults_applied);
            tracing::info!(?fault, app = app_id, "simulator applies an injected fault");
            match fault {
                Fault::ServerError { status, retry_after } => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let code = if status == StatusCode::SERVICE_UNAVAILABLE { "ServiceUnavailable" } else { "ServiceFailure" };
                    let mut r = Reply::error(status, code, None, "The service is temporarily unavailable.");
                    if let Some(s) = retry_after {
                        r = r.header(header::RETRY_AFTER, s.to_string());
                    }
                    return r.into();
                }
                Fault::TooManyRequests { retry_after } => {
                    let mut r = Reply::error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", None, "Too many requests.");
                    if let Some(s) = retry_after {
                        r = r.header(header::RETRY_AFTER, s.to_string());
                    }
                    return r.into();
                }
                Fault::DropConnection => return Answer::Raw(reply::dropped_connection()),
                Fault::MalformedBody => {
                    return Reply::json_bytes(StatusCode::OK, bytes::Bytes::from_static(b"{\"_links\": {\"self\": {\"href\": \"/ucwa")).into()
                }
                Fault::Resync => {
                    Counters::bump(&shared.counters.resyncs);
                    return Reply::json_bytes(StatusCode::OK, app.channel.force_resync(ack, now)).into();
                }
                Fault::Resume => {
                    Counters::bump(&shared.counters.resumes);
                    let body = app.channel.force_resume(ack, now);
                    // The pool cleaned up after the gap: the application's subscriptions ended.
                    st.forget_presence(app_id);
                    return Reply::json_bytes(StatusCode::OK, body).into();
                }
                Fault::EndlessBody { gzip } => return Answer::Raw(reply::endless_body(app.channel.first_href(), gzip)),
                Fault::MalformedEvent => {
                    // Queued like any event, so it goes out in order with whatever else is due.
                    let communication = format!("{}/communication", paths::app_path(app_id));
                    app.channel.push([super::channel::SimEvent {
                        sender_rel: "communication",
                        sender_href: communication.clone(),
                        event: serde_json::json!({"link": {"rel": "malformedEvent", "href": communication}}),
                    }]);
                }
                Fault::TokenExpiry | Fault::ApplicationGone => {} // applied when injected
            }
        }
        (app.channel.poll(ack, priority, now), app.channel.timeout)
    };
    let (waiter, notify) = match step {
        PollStep::Wait { waiter, notify } => (waiter, notify),
        other => return answer_poll(shared, user, other),
    };
    let mut guard = ParkedGuard { shared, app: app_id, waiter, armed: true };
    let deadline = Instant::now() + timeout;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let finished = {
            let mut st = shared.lock();
            match st.apps.get_mut(&app_id) {
                None => {
                    guard.armed = false;
                    return app_gone().into();
                }
                Some(app) => app.channel.finish_wait(waiter, false, Instant::now()),
            }
        };
        if let Some(step) = finished {
            guard.armed = false;
            return answer_poll(shared, user, step);
        }
        tokio::select! {
            _ = &mut notified => continue,
            _ = tokio::time::sleep_until(deadline) => {
                guard.armed = false;
                let mut st = shared.lock();
                return match st.apps.get_mut(&app_id) {
                    None => app_gone().into(),
                    Some(app) => {
                        let step = app.channel.finish_wait(waiter, true, Instant::now()).expect("a timed-out wait always finishes");
                        drop(st);
                        answer_poll(shared, user, step)
                    }
                };
            }
        }
    }
}

fn answer_poll(shared: &Shared, user: &str, step: PollStep) -> Answer {
    let c = &shared.counters;
    match step {
        PollStep::Answer(body, kind) => {
            match kind {
                PollKind::Batch(0) => Counters::bump(&c.empty_batches),
                PollKind::Batch(n) => {
                    Counters::bump(&c.batches);
                    c.events.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    *c.events_by_user.lock().expect("counters lock").entry(user.to_string()).or_default() += n as u64;
                }
                PollKind::Repeat => Counters::bump(&c.repeated_batches),
                PollKind::Resync => Counters::bump(&c.resyncs),
            }
            Reply::json_bytes(StatusCode::OK, body).into()
        }
        PollStep::Replaced => {
            Counters::bump(&c.pget_replaced);
            Reply::error(StatusCode::CONFLICT, "Conflict", Some("PGetReplaced"), "A newer pending GET replaced this one.").into()
        }
        PollStep::Wait { .. } => unreachable!("answer_poll is never given a wait"),
    }
}
