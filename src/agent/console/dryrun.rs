//! `POST /api/dryrun?account=&seq=`: an event run again through the account's scripts as
//! their files are now, offline (`agent::dry_run`): what each would send, nothing sent. No
//! admin token needed (it changes nothing), but one at a time: it builds every script anew.
//! The request must carry `X-Requested-By` (the console's page sends it): a form or a plain
//! request from another site cannot set a header, and a script of another site that tries is
//! stopped by the browser's preflight, which this listener does not grant.

use super::shared::{Console, EventsQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The header a dry run must carry.
pub(super) const REQUESTED_BY: &str = "x-requested-by";

pub(super) async fn dry_run(c: Arc<Console>, q: EventsQuery, headers: &HeaderMap) -> Response {
    if !headers.contains_key(REQUESTED_BY) {
        return (StatusCode::FORBIDDEN, Json(json!({"error": "a dry run is asked with an X-Requested-By header (the console's page sends it)"})))
            .into_response();
    }
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
