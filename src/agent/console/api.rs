//! The JSON the console reads. Accounts are paged and filtered here (an agent may run a
//! thousand); an account is named by its `key`: its label where the listener names accounts
//! (`MetricsConfig::trusted`), else `#N` (its place in label order), and errors are quoted
//! only there, as `/healthz` does.

use super::shared::{AccountQuery, AccountsQuery, Console, EventsQuery};
use crate::metrics::HealthState;
use crate::script::ScriptHost;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// The most accounts one page holds.
const MAX_PER_PAGE: usize = 200;

/// One page of accounts, with what the header shows (the reload's outcome, whether actions
/// are allowed).
pub(super) async fn accounts(c: Arc<Console>, q: AccountsQuery) -> Response {
    let (all, _) = c.fleet.accounts();
    let total_all = all.len();
    let filter = q.q.as_deref().map(str::trim).filter(|f| !f.is_empty()).map(str::to_lowercase);
    let per_page = q.per_page.unwrap_or(50).clamp(1, MAX_PER_PAGE);
    let details = c.details;
    let rows: Vec<Value> = tokio::task::spawn_blocking(move || {
        all.iter()
            .enumerate()
            .map(|(i, (name, host))| account_row(i, name, host, details))
            .filter(|row| match &filter {
                None => true,
                Some(f) if f == "trouble" => row["trouble"] == true,
                Some(f) => {
                    row["state"].as_str().is_some_and(|s| s.contains(f.as_str())) || row["name"].as_str().is_some_and(|n| n.to_lowercase().contains(f.as_str()))
                }
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let pages = rows.len().div_ceil(per_page).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Value> = rows.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    let reload = c.fleet.status.last_reload();
    Json(json!({
        "total": rows.len(),
        "accounts_total": total_all,
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "named": details,
        "admin": c.admin.configured(),
        "version": env!("CARGO_PKG_VERSION"),
        "reload": {"ok": reload.ok, "error": if details { reload.error } else { None }},
        "accounts": shown,
    }))
    .into_response()
}

/// An account's line: its health, its figures and how many of its scripts are in trouble.
fn account_row(i: usize, name: &str, host: &ScriptHost, details: bool) -> Value {
    let env = host.env();
    let h = env.metrics.health();
    let s = env.metrics.account_summary();
    let scripts = host.statuses();
    let trouble_scripts = scripts.iter().filter(|s| s.state != "loaded").count();
    let mut row = json!({
        "key": key(i, name, details),
        "state": h.state,
        "status": h.status,
        "for_secs": h.for_secs,
        "signed_in": matches!(h.state, HealthState::Polling | HealthState::Recovering),
        "application": env.application.get().is_some(),
        "applications_created": s.applications_created,
        "last_poll_secs_ago": s.last_poll_secs_ago,
        "polls": s.polls,
        "recoveries": s.recoveries,
        "handler_errors": s.handler_errors,
        "scripts": scripts.len(),
        "scripts_in_trouble": trouble_scripts,
        "trouble": h.state != HealthState::Polling || trouble_scripts > 0 || h.status != "ok",
    });
    if details {
        row["name"] = name.into();
        row["last_error"] = h.last_error.into();
        row["warnings"] = h.warnings.into();
    }
    row
}

/// How a request names the `i`th account (label order).
fn key(i: usize, name: &str, details: bool) -> String {
    if details {
        name.to_string()
    } else {
        format!("#{}", i + 1)
    }
}

fn no_account() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "this agent runs no account of that key"}))).into_response()
}

/// An account's scripts: state, version, last errors (where quoted), figures.
pub(super) async fn scripts(c: Arc<Console>, q: AccountQuery) -> Response {
    let Some((_, host)) = c.account(&q.account) else { return no_account() };
    let metrics = &host.env().metrics;
    let list: Vec<Value> = host
        .statuses()
        .into_iter()
        .map(|st| {
            let mut v = serde_json::to_value(&st).unwrap_or_default();
            let figures = metrics.script_summary(&st.name);
            v["handled"] = figures.handled.into();
            v["errors"] = figures.errors.into();
            v["p50_ms"] = figures.p50_ms.into();
            v["p99_ms"] = figures.p99_ms.into();
            if !c.details {
                // Where the error was (file:line) stays; what it said does not.
                if let Some(o) = v.as_object_mut() {
                    o.remove("load_error");
                    if let Some(e) = o.get_mut("last_error").and_then(Value::as_object_mut) {
                        e.remove("message");
                    }
                }
            }
            v
        })
        .collect();
    Json(json!({"account": q.account, "scripts": list})).into_response()
}

/// The most events one `/api/events` answer holds.
const MAX_EVENTS: usize = 200;

/// An account's recent events, newest first, each with every script's trace of it (timer and
/// `on_unload` runs stand alone). Read from the traces kept (`scripts.traces_per_script`).
pub(super) async fn events(c: Arc<Console>, q: EventsQuery) -> Response {
    let Some((_, host)) = c.account(&q.account) else { return no_account() };
    let limit = q.limit.unwrap_or(30).clamp(1, MAX_EVENTS);
    let details = c.details;
    let seq = q.seq;
    let found = tokio::task::spawn_blocking(move || {
        // Enough traces for `limit` events of every script.
        let per = limit * host.statuses().len().max(1);
        let query = crate::store::TraceQuery { script: None, seq, limit: per.min(20_000) };
        host.env().store.traces(&query).map(|lines| group(lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect(), limit, details))
    })
    .await;
    match found {
        Ok(Ok(events)) => Json(json!({"account": q.account, "events": events})).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "console: cannot read the traces");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "cannot read the traces (see the agent's log)"}))).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "cannot read the traces"}))).into_response(),
    }
}

/// Traces (oldest first) grouped by event, newest event first, at most `limit`.
fn group(traces: Vec<Value>, limit: usize, details: bool) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    let mut at_seq: std::collections::HashMap<u64, usize> = Default::default();
    for mut t in traces {
        if let Some(o) = t.as_object_mut() {
            o.remove("account");
            if !details {
                for call in o.get_mut("calls").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(c) = call.as_object_mut() {
                        c.remove("error");
                    }
                }
            }
        }
        let seq = t["event"]["seq"].as_u64().filter(|_| t["kind"] == "event");
        match seq.and_then(|s| at_seq.get(&s)) {
            Some(&i) => {
                let e = &mut events[i];
                e["at_ms"] = e["at_ms"].as_i64().min(t["at_ms"].as_i64()).into();
                if let Some(list) = e["traces"].as_array_mut() {
                    list.push(t);
                }
            }
            None => {
                if let Some(s) = seq {
                    at_seq.insert(s, events.len());
                }
                events.push(json!({"seq": seq, "kind": t["kind"], "event": t["event"], "at_ms": t["at_ms"], "traces": [t]}));
            }
        }
    }
    events.sort_by_key(|e| std::cmp::Reverse((e["at_ms"].as_i64().unwrap_or(0), e["seq"].as_u64().unwrap_or(0))));
    events.truncate(limit);
    events
}
