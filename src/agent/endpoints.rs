//! `/metrics` (Prometheus text format) and `/healthz` on `[metrics] listen`.
//!
//! `/healthz` answers 200 while the agent is signed in and polling, 503 otherwise; the JSON
//! body says which state it is in, for how long, and the last error.

use crate::metrics::HealthState;
use crate::script::ScriptHost;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
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

pub async fn serve(listen: SocketAddr, host: ScriptHost) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let metrics_host = host.clone();
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let host = metrics_host.clone();
                async move {
                    let text = tokio::task::spawn_blocking(move || render(&host)).await.unwrap_or_default();
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let health = host.env().metrics.health();
                async move {
                    let status = if health.state == HealthState::Polling { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, axum::Json(health)).into_response()
                }
            }),
        );
    tracing::info!(%addr, "metrics and health endpoints listening");
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok((addr, task))
}

/// The metrics, with the journal's depth and each script's lag read from the database now.
fn render(host: &ScriptHost) -> String {
    let env = host.env();
    let store = &env.store;
    let journal = (|| {
        let head = store.head().ok()?;
        let depth = store.depth().ok()?;
        let lags = host
            .scripts()
            .into_iter()
            .map(|(name, _)| {
                let cursor = store.cursor(&name).ok().flatten().unwrap_or(head);
                (name, head.saturating_sub(cursor))
            })
            .collect();
        Some((depth, lags))
    })();
    env.metrics.render(journal)
}
