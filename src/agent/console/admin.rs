//! The console's actions, allowed only with the admin token (`token.rs`): resume a paused
//! script, reload the configuration.

use super::shared::Console;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// `POST /api/resume?account=&script=`: a paused script takes events again.
pub(super) fn resume(console: &Console, account: &str, script: &str) -> Response {
    let Some((name, host)) = console.account(account) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such account"}))).into_response();
    };
    if host.resume(script) {
        tracing::info!(account = %name, script, "console: resume asked");
        Json(json!({"resumed": script})).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": "no such script running"}))).into_response()
    }
}

/// `POST /api/reload`: the configuration read again, as on SIGHUP.
pub(super) fn reload(console: &Console) -> Response {
    console.fleet.reload_asked.notify_one();
    (StatusCode::ACCEPTED, Json(json!({"reload": "asked"}))).into_response()
}
