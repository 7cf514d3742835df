//! `POST /api/dryrun?account=&seq=`: an event run again through the account's scripts as
//! their files are now, offline (`agent::dry_run`): what each would send, nothing sent. No
//! admin token needed (it changes nothing), but one at a time: it builds every script anew.

use super::shared::{Console, EventsQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub(super) async fn dry_run(c: Arc<Console>, q: EventsQuery) -> Response {
    let Some(seq) = q.seq else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "which event? (?seq=)"}))).into_response();
    };
    let Some((_, host)) = c.account(&q.account) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "this agent runs no account of that key"}))).into_response();
    };
    let Ok(_one) = RUNNING.try_acquire() else {
        return (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": "a dry run is under way; try again when it is done"}))).into_response();
    };
    match crate::agent::dry_run::dry_run(&host, seq).await {
        Ok(mut scripts) => {
            if !c.details {
                // (As the traces there: where, not what.)
                scripts
                    .iter_mut()
                    .for_each(|s| s.errors.iter_mut().for_each(|e| *e = crate::script::location::error_location(e).unwrap_or_else(|| "error".into())));
            }
            Json(json!({"seq": seq, "sent": false, "scripts": scripts})).into_response()
        }
        Err(why) => (StatusCode::NOT_FOUND, Json(json!({"error": why}))).into_response(),
    }
}
