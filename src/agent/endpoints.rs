//! `/metrics` (Prometheus text format) and `/healthz` on `[metrics] listen`.
//!
//! `/healthz` answers 200 while the agent is signed in and polling, 503 otherwise; the JSON
//! body says which state it is in, for how long, and the last error. With `[[account]]`s it
//! answers 200 only while every account polls, with each account's health in the body, and
//! `/healthz/<account>` gives one account's. `/metrics` labels each sample with `account`.
//! The endpoint listens before the accounts open; until they all have, `/healthz` answers 503
//! with the state `starting`.
//!
//! `/` is the web console (`console/`), mounted here.
//!
//! `/api/traces` gives scripts' traces (what their runs did, `script::trace`) as JSON, and
//! `/api/tap` streams the events and the traces as they happen (server-sent events), behind
//! the same authentication; both name accounts only where `/healthz` would.

use super::access::Access;
use super::Fleet;
use crate::config::MetricsConfig;
use crate::metrics::{Health, HealthState};
use crate::script::ScriptHost;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Binds `listen` and serves until the handle is aborted.
/// The running `/metrics` endpoint (where it listens, its task), shared with the reloader.
pub type EndpointSlot = Arc<std::sync::Mutex<Option<(SocketAddr, JoinHandle<()>)>>>;

/// Puts `new` in the slot, stopping the endpoint that was there.
pub fn replace(slot: &EndpointSlot, new: Option<(SocketAddr, JoinHandle<()>)>) {
    let old = std::mem::replace(&mut *slot.lock().expect("endpoint slot lock"), new);
    if let Some((_, task)) = old {
        task.abort();
    }
}

/// Stops the endpoint in the slot and waits until its listener is closed (so its address can
/// be bound again at once).
pub async fn stop(slot: &EndpointSlot) {
    let old = slot.lock().expect("endpoint slot lock").take();
    if let Some((_, task)) = old {
        task.abort();
        let _ = task.await;
    }
}

/// Serves `/` (the console), `/metrics`, `/healthz`, `/healthz/<account>` and the API on `listen` until the handle is
/// aborted. With `web.basic_auth_users`, every request must authenticate; `/healthz` names
/// accounts and quotes errors only where the listener is trusted (`MetricsConfig::trusted`).
pub async fn serve(
    listen: SocketAddr,
    web: &MetricsConfig,
    tls: Option<crate::tls::TlsFiles>,
    fleet: Arc<Fleet>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    // The certificate is read before binding: a bad file leaves the running endpoint alone.
    let acceptor = tls.as_ref().map(crate::tls::TlsFiles::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let access = Arc::new(Access::new(web));
    let details = web.trusted();
    let (metrics_fleet, one_fleet) = (fleet.clone(), fleet.clone());
    let (a2, a3, a4, a5, a6) = (access.clone(), access.clone(), access.clone(), access.clone(), access.clone());
    let (traces_fleet, tap_fleet) = (fleet.clone(), fleet.clone());
    let admin = super::console::AdminToken::from_env(web.admin_token_env.as_deref());
    let router = super::console::router(fleet.clone(), access, details, admin)
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let fleet = metrics_fleet.clone();
                let a = a2.clone();
                async move {
                    a.check(&headers).await?;
                    let text = tokio::task::spawn_blocking(move || render_all(&fleet)).await.unwrap_or_default();
                    Ok::<_, Response>(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
                }
            }),
        )
        .route(
            "/healthz",
            get(move |headers: HeaderMap| {
                let (a, fleet) = (a3.clone(), fleet.clone());
                async move { a.check(&headers).await.map(|()| health_of_all(&fleet, details)) }
            }),
        )
        .route(
            "/healthz/{account}",
            get(move |headers: HeaderMap, Path(name): Path<String>| {
                let (a, fleet) = (a4.clone(), one_fleet.clone());
                async move { a.check(&headers).await.map(|()| health_of_one(&fleet, &name, details)) }
            }),
        )
        .route(
            "/api/traces",
            get(move |headers: HeaderMap, Query(q): Query<TracesQuery>| {
                let (a, fleet) = (a5.clone(), traces_fleet.clone());
                async move {
                    a.check(&headers).await?;
                    Ok::<_, Response>(traces(fleet, q, details).await)
                }
            }),
        )
        .route(
            "/api/tap",
            get(move |headers: HeaderMap, Query(q): Query<TapQuery>| {
                let (a, fleet) = (a6.clone(), tap_fleet.clone());
                async move { a.check(&headers).await.map(|()| tap(&fleet, q, details)) }
            }),
        );
    tracing::info!(%addr, authenticated = !web.basic_auth_users.is_empty(), https = acceptor.is_some(), "metrics and health endpoints listening");
    let task = tokio::spawn(async move {
        let served = match acceptor {
            Some(a) => axum::serve(crate::tls::TlsListener::new(listener, a), router).await,
            None => axum::serve(listener, router).await,
        };
        if let Err(error) = served {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok((addr, task))
}

/// `/api/traces?script=&seq=&account=&limit=`.
#[derive(Debug, Default, serde::Deserialize)]
struct TracesQuery {
    script: Option<String>,
    seq: Option<u64>,
    account: Option<String>,
    limit: Option<usize>,
}

/// The most traces one `/api/traces` answer holds.
const MAX_TRACES: usize = 1000;

/// The traces asked for, oldest first (at most `limit`, default 100, the newest): a JSON array.
/// Without `details` the accounts are not named (nor can one be asked for).
async fn traces(fleet: Arc<Fleet>, q: TracesQuery, details: bool) -> Response {
    if q.account.is_some() && !details {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "this listener does not name accounts (as /healthz): no account filter"})))
            .into_response();
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_TRACES);
    let query = crate::store::TraceQuery { script: q.script, seq: q.seq, limit };
    let found = tokio::task::spawn_blocking(move || {
        let (accounts, _) = fleet.accounts();
        let mut all: Vec<(i64, serde_json::Value)> = Vec::new();
        for (name, host) in accounts {
            if q.account.as_ref().is_some_and(|a| *a != name) {
                continue;
            }
            match host.env().store.traces(&query) {
                Ok(lines) => all.extend(lines.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).map(|mut v| {
                    if !details {
                        strip_account(&mut v);
                    }
                    (v["at_ms"].as_i64().unwrap_or(0), v)
                })),
                Err(error) => tracing::warn!(account = %name, %error, "cannot read the traces"),
            }
        }
        // (Each account's are in order; merged by time, the newest `limit` kept.)
        all.sort_by_key(|(at, _)| *at);
        let skip = all.len().saturating_sub(limit);
        all.into_iter().skip(skip).map(|(_, v)| v).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    axum::Json(found).into_response()
}

fn strip_account(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("account");
    }
}

/// `/api/tap?rel=&script=&account=`.
#[derive(Debug, Default, serde::Deserialize)]
struct TapQuery {
    rel: Option<String>,
    script: Option<String>,
    /// One account's (the console's tail follows the account it shows).
    account: Option<String>,
}

/// Server-sent events, one JSON object each: `{"kind":"event", seq, rel, type, href, account}`
/// as each event is handed to the scripts, `{"kind":"trace", "run": …, …}` as each run's trace
/// is committed (a trace holds its event; `run` is the trace's own `kind`); `{"kind":"lagged","missed":n}` when the reader fell
/// behind. Filtered by the event's `rel`, the trace's `script` and the `account`. The accounts of the agent
/// when the stream starts are tapped; the stream ends when they have all stopped.
/// Taps open at once: each costs a task per account it follows (a thousand accounts, a
/// thousand tasks), so a few dozen clients could take the runtime from the accounts.
const MAX_TAPS: usize = 8;
static TAPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_TAPS);

fn tap(fleet: &Fleet, q: TapQuery, details: bool) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    if q.account.is_some() && !details {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "this listener does not name accounts (as /healthz): no account filter"})))
            .into_response();
    }
    let Ok(tapping) = TAPS.try_acquire() else {
        let error = format!("{MAX_TAPS} taps are open already; close one (or follow one account: ?account=)");
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": error }))).into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
    let q = Arc::new(q);
    for (account, host) in fleet.accounts().0 {
        if q.account.as_ref().is_some_and(|a| *a != account) {
            continue;
        }
        let (tx, q) = (tx.clone(), q.clone());
        let (mut out, guard) = host.tap();
        tokio::spawn(async move {
            let _tapping = guard;
            // The stream ends with the account (stopped, or removed by a reload): the stream
            // itself holds what keeps the host's output open.
            let mut check = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                let item = tokio::select! {
                    item = out.recv() => item,
                    _ = tx.closed() => return,
                    _ = check.tick() => {
                        if host.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                let line = match item {
                    Ok(crate::script::ScriptOutput::Received { seq, rel, kind, href }) => {
                        if q.rel.as_ref().is_some_and(|r| *r != rel) {
                            continue;
                        }
                        let mut v = serde_json::json!({"kind": "event", "seq": seq, "rel": rel, "type": kind, "href": href});
                        if details {
                            v["account"] = account.clone().into();
                        }
                        v.to_string()
                    }
                    Ok(crate::script::ScriptOutput::Trace { script, json, .. }) => {
                        if q.script.as_ref().is_some_and(|s| *s != script) {
                            continue;
                        }
                        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&json) else { continue };
                        if q.rel.as_ref().is_some_and(|r| v["event"]["rel"].as_str() != Some(r)) {
                            continue;
                        }
                        if !details {
                            strip_account(&mut v);
                        }
                        // (The trace's own `kind`, event, timer…, becomes `run`.)
                        if let Some(o) = v.as_object_mut() {
                            if let Some(run) = o.insert("kind".into(), "trace".into()) {
                                o.insert("run".into(), run);
                            }
                        }
                        v.to_string()
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => serde_json::json!({"kind": "lagged", "missed": n}).to_string(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // (The permit goes with the stream: the slot is free again when the client leaves.)
    let stream = futures_util::stream::unfold((rx, tapping), |(mut rx, tapping)| async move {
        rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(Event::default().data(line)), (rx, tapping)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

fn status_of(h: &Health) -> StatusCode {
    if h.state == HealthState::Polling {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// One account: its health as it is. Several: 200 only when every account polls, `status`
/// `ok` only when every one is ok, and each account's health under `accounts`. A rejected
/// configuration reload makes `status` `degraded` (with the reason) until a good one.
/// Without `details` (an untrusted listener) only the status and state are given.
fn health_of_all(fleet: &Fleet, details: bool) -> Response {
    let reload = fleet.status.last_reload();
    let (accounts, named) = fleet.accounts();
    // The endpoint listens before the accounts open: none, or some, are there yet.
    if !fleet.started.load(std::sync::atomic::Ordering::SeqCst) {
        let body = serde_json::json!({"status": "unavailable", "state": HealthState::Starting, "accounts_opened": accounts.len()});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if !named {
        if let Some((_, host)) = accounts.first() {
            let mut h = host.env().metrics.health();
            if let Some(e) = &reload.error {
                h.status = "degraded";
                h.warnings.push(format!("configuration reload rejected (the running one stays): {e}"));
            }
            let code = status_of(&h);
            if !details {
                return (code, axum::Json(serde_json::json!({"status": h.status, "state": h.state}))).into_response();
            }
            return (code, axum::Json(h)).into_response();
        }
    }
    let each: BTreeMap<String, Health> = accounts.iter().map(|(n, h)| (n.clone(), h.env().metrics.health())).collect();
    let polling = each.values().all(|h| h.state == HealthState::Polling);
    let status = if !polling {
        "unavailable"
    } else if each.values().all(|h| h.status == "ok") && reload.ok {
        "ok"
    } else {
        "degraded"
    };
    let not_polling: Vec<&String> = each.iter().filter(|(_, h)| h.state != HealthState::Polling).map(|(n, _)| n).collect();
    let code = if polling { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = if details {
        serde_json::json!({ "status": status, "accounts_total": each.len(), "accounts_not_polling": not_polling, "config_reload_error": reload.error, "accounts": each })
    } else {
        serde_json::json!({ "status": status, "accounts_total": each.len(), "accounts_not_polling": not_polling.len() })
    };
    (code, axum::Json(body)).into_response()
}

/// `/healthz/<account>`: that account alone (404 for an account this agent does not run).
fn health_of_one(fleet: &Fleet, name: &str, details: bool) -> Response {
    // Where the listener is not trusted, this route would tell which names are accounts (often
    // e-mail addresses): it answers nothing there; /healthz gives the counts.
    if !details {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "per-account health is served on a loopback listener or behind basic auth"})))
            .into_response();
    }
    match fleet.accounts().0.into_iter().find(|(n, _)| n == name) {
        Some((_, host)) => {
            let h = host.env().metrics.health();
            if !details {
                return (status_of(&h), axum::Json(serde_json::json!({"status": h.status, "state": h.state}))).into_response();
            }
            (status_of(&h), axum::Json(h)).into_response()
        }
        // (During start-up the account may not have opened yet.)
        None if !fleet.started.load(std::sync::atomic::Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable", "state": HealthState::Starting}))).into_response()
        }
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "this agent runs no account of that name"}))).into_response(),
    }
}

/// Every account's metrics in one exposition: each family once, its samples labelled with
/// `account` when the accounts are named.
fn render_all(fleet: &Fleet) -> String {
    let (accounts, named) = fleet.accounts();
    let texts: Vec<(Option<String>, String)> = accounts.iter().map(|(n, h)| (named.then(|| n.clone()), render(h))).collect();
    let mut out = merge_families(&texts);
    fleet.status.render(&mut out);
    out
}

/// Merges expositions: the `# HELP`/`# TYPE` of a family once (the first text's), then its
/// samples from every text in order, each with `account="…"` first among its labels when the
/// text has one. A family whose type differs from the first text's (a script metric defined
/// differently by two accounts' scripts) is left out for that text, logged: a scrape with two
/// types for one name would be refused whole.
fn merge_families(texts: &[(Option<String>, String)]) -> String {
    let mut order: Vec<String> = Vec::new();
    // name → (HELP line, TYPE line, samples)
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (account, text) in texts {
        let mut current = String::new();
        let mut skipping = false;
        for line in text.lines() {
            let help = line.strip_prefix("# HELP ");
            let kind = line.strip_prefix("# TYPE ");
            if let Some(rest) = help.or(kind) {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                if !families.contains_key(&name) {
                    order.push(name.clone());
                }
                let f = families.entry(name.clone()).or_default();
                if name != current {
                    skipping = false;
                }
                match (help, kind) {
                    (Some(_), _) if f.0.is_none() => f.0 = Some(line.to_string()),
                    (_, Some(_)) if f.1.is_none() => f.1 = Some(line.to_string()),
                    (_, Some(_)) if f.1.as_deref() != Some(line) => {
                        tracing::warn!(metric = %name, account = account.as_deref().unwrap_or("default"), "a metric of this name has another type in another account; this account's samples are left out");
                        skipping = true;
                    }
                    _ => {}
                }
                current = name;
                continue;
            }
            if line.is_empty() || skipping {
                continue;
            }
            let sample = match account {
                Some(a) => with_account(line, a),
                None => line.to_string(),
            };
            if !families.contains_key(&current) {
                order.push(current.clone());
            }
            families.entry(current.clone()).or_default().2.push(sample);
        }
    }
    let mut out = String::with_capacity(texts.iter().map(|(_, t)| t.len()).sum());
    for name in order {
        if let Some((help, kind, samples)) = families.get(&name) {
            for l in help.iter().chain(kind).chain(samples) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// One family while merging: its HELP line, its TYPE line, its samples.
type Family = (Option<String>, Option<String>, Vec<String>);

/// A sample line with `account="…"` as its first label.
fn with_account(line: &str, account: &str) -> String {
    let label = format!("account=\"{}\"", account.replace('\\', "\\\\").replace('"', "\\\""));
    match line.find(['{', ' ']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let rest = &line[i + 1..];
            let sep = if rest.starts_with('}') { "" } else { "," };
            format!("{}{{{label}{sep}{rest}", &line[..i])
        }
        Some(i) => format!("{}{{{label}}}{}", &line[..i], &line[i..]),
        None => line.to_string(),
    }
}

/// One account's metrics, with the journal's depth and each script's lag read from its
/// database (or as last read, when it was not used since).
fn render(host: &ScriptHost) -> String {
    let env = host.env();
    let store = &env.store;
    let names: Vec<String> = host.scripts().into_iter().map(|(name, _)| name).collect();
    // (Remembered while the account is idle: no scrape opens a database the pool closed.)
    let journal = store.journal_figures(&names).ok().map(|f| {
        let lags = f.cursors.into_iter().map(|(name, cursor)| (name, f.head.saturating_sub(cursor.unwrap_or(f.head)))).collect();
        (f.depth, lags)
    });
    env.metrics.render(journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_merge_once_with_the_account_label_first() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n# HELP y Y.\n# TYPE y gauge\ny{script=\"s\"} 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n# HELP y Y.\n# TYPE y gauge\ny{script=\"s\"} 4\n";
        let merged = merge_families(&[(Some("one".into()), a.into()), (Some("t\"wo".into()), b.into())]);
        let want = [
            "# HELP x_total X.",
            "# TYPE x_total counter",
            "x_total{account=\"one\"} 1",
            "x_total{account=\"t\\\"wo\"} 3",
            "# HELP y Y.",
            "# TYPE y gauge",
            "y{account=\"one\",script=\"s\"} 2",
            "y{account=\"t\\\"wo\",script=\"s\"} 4",
        ];
        assert_eq!(merged.lines().collect::<Vec<_>>(), want);
        let parsed = prometheus_parse::Scrape::parse(merged.lines().map(|l| Ok(l.to_string()))).unwrap();
        assert_eq!(parsed.samples.len(), 4);
        assert_eq!(merge_families(&[(None, a.into())]), a, "one unnamed account: unchanged");
        // Another account's script defined `y` as a counter with other help: left out, not a
        // second TYPE line that would make Prometheus refuse the scrape.
        let c = "# HELP y Other.\n# TYPE y counter\ny 9\n# HELP x_total X.\n# TYPE x_total counter\nx_total 5\n";
        let merged = merge_families(&[(Some("one".into()), a.into()), (Some("three".into()), c.into())]);
        assert_eq!(merged.matches("# TYPE y ").count(), 1, "{merged}");
        assert!(!merged.contains("y{account=\"three\"}") && merged.contains("x_total{account=\"three\"} 5"), "{merged}");
        prometheus_parse::Scrape::parse(merged.lines().map(|l| Ok(l.to_string()))).unwrap();
    }
}
