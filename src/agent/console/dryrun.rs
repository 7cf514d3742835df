//! `/api/dryrun`: an event run again through the account's current scripts, offline.

use super::api::EventsQuery;
use super::routes::Console;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

pub(super) async fn dry_run(_c: Arc<Console>, _q: EventsQuery) -> Response {
    (StatusCode::NOT_IMPLEMENTED, Json(serde_json::json!({"error": "not yet"}))).into_response()
}
