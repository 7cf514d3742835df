//! The console's routes, each behind the endpoint's basic auth; the actions also behind the
//! admin token (`admin.rs`).

use super::shared::{AccountQuery, AccountsQuery, Console, EventsQuery, ScriptQuery};
use super::token::AdminToken;
use super::{admin, api, assets, dryrun};
use crate::agent::access::Access;
use crate::agent::Fleet;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

type Shared = State<Arc<Console>>;

/// `/`, its assets and the console's API, on the endpoint's listener.
pub(crate) fn router(fleet: Arc<Fleet>, access: Arc<Access>, details: bool, admin: AdminToken) -> Router {
    let console = Arc::new(Console { fleet, access, details, admin });
    Router::new()
        .route("/", get(|s: Shared, h: HeaderMap| guarded(s, h, |_| async { assets::serve(assets::INDEX, "text/html; charset=utf-8") })))
        .route("/console.css", get(|s: Shared, h: HeaderMap| guarded(s, h, |_| async { assets::serve(assets::STYLE, "text/css; charset=utf-8") })))
        .route("/console.js", get(|s: Shared, h: HeaderMap| guarded(s, h, |_| async { assets::serve(assets::SCRIPT, "text/javascript; charset=utf-8") })))
        .route("/api/accounts", get(|s: Shared, h: HeaderMap, Query(q): Query<AccountsQuery>| guarded(s, h, move |c| api::accounts(c, q))))
        .route("/api/scripts", get(|s: Shared, h: HeaderMap, Query(q): Query<AccountQuery>| guarded(s, h, move |c| api::scripts(c, q))))
        .route("/api/events", get(|s: Shared, h: HeaderMap, Query(q): Query<EventsQuery>| guarded(s, h, move |c| api::events(c, q))))
        .route(
            "/api/dryrun",
            post(|s: Shared, h: HeaderMap, Query(q): Query<EventsQuery>| {
                let asked = h.clone();
                guarded(s, h, move |c| async move { dryrun::dry_run(c, q, &asked).await })
            }),
        )
        .route(
            "/api/resume",
            post(|s: Shared, h: HeaderMap, Query(q): Query<ScriptQuery>| admin_only(s, h, move |c| async move { admin::resume(&c, &q.account, &q.script) })),
        )
        .route("/api/reload", post(|s: Shared, h: HeaderMap| admin_only(s, h, |c| async move { admin::reload(&c) })))
        .with_state(console)
}

/// Runs `f` once the request passed basic auth (when configured).
async fn guarded<F, Fut>(State(c): Shared, headers: HeaderMap, f: F) -> Response
where
    F: FnOnce(Arc<Console>) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    match c.access.check(&headers).await {
        Ok(()) => f(c).await,
        Err(refused) => refused,
    }
}

/// `guarded`, and the admin token too.
async fn admin_only<F, Fut>(s: Shared, headers: HeaderMap, f: F) -> Response
where
    F: FnOnce(Arc<Console>) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    // The token is looked at only once basic auth passed: a stranger's guesses are not logged.
    let asked = headers.clone();
    guarded(s, headers, move |c| async move {
        match c.admin.check(&asked) {
            Ok(()) => f(c).await,
            Err(refused) => refused,
        }
    })
    .await
}
