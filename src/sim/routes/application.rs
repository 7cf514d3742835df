//! The dispatch of everything under `/ucwa/oauth/v1/applications`: creating an application,
//! the application itself (GET, DELETE), its event channel, then one `match` that hands the
//! rest to the file of its resource family (as mini-redis' `cmd/`).

use super::ctx::{fallback, At};
use super::{communication, conversations, invitations, me, people};
use crate::sim::paths::app_path;
use crate::sim::poll;
use crate::sim::reply::Reply;
use crate::sim::resources;
use crate::sim::shared::{not_found, strip_bom, Answer, Req, Shared};
use crate::sim::state::Counters;
use axum::http::{header, Method, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

/// Everything under `/ucwa/oauth/v1/applications`.
pub(crate) async fn ucwa(shared: &Arc<Shared>, req: &Req, user: &str, rest: &[&str]) -> Answer {
    let post = req.method == Method::POST;
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let (id, rest) = match rest {
        [] if post => return create_application(shared, req, user).into(),
        [] => return Reply::error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None, "Use POST.").into(),
        [id, rest @ ..] => match id.parse::<u64>() {
            Ok(id) => (id, rest),
            Err(_) => return not_found().into(),
        },
    };
    if rest == ["events"] && get {
        return poll::poll(shared, req, user, id).await;
    }
    let now = Instant::now();
    let mut st = shared.lock();
    st.expire_idle(&shared.config, now, &shared.counters);
    let Some(app) = st.app_of(id, user) else {
        return Reply::error(StatusCode::NOT_FOUND, "NotFound", Some("ApplicationNotFound"), "The application does not exist.").into();
    };
    app.last_seen = now;
    let at = At { shared, req, user, id, get, post };
    match rest {
        [] if get => Reply::json(StatusCode::OK, &resources::application(app)).into(),
        [] if req.method == Method::DELETE => {
            st.remove_app(id);
            Counters::bump(&shared.counters.applications_deleted);
            Reply::no_content().into()
        }
        ["me", ..] | ["reportmyactivity"] => me::route(&at, st, rest),
        ["people", ..] | ["photos", ..] | ["policies"] | ["onlinemeetings", ..] => people::route(&at, st, rest),
        ["communication", "conversations", ..] => conversations::route(&at, st, rest),
        ["communication", "audiovideoinvitations" | "messaginginvitations", ..] => invitations::route(&at, st, rest),
        ["communication", ..] => communication::route(&at, st, rest),
        _ => fallback(get, rest),
    }
}

/// `POST applications` (PROTOCOL.md §3): keys matched case-insensitively, unknown keys ignored.
fn create_application(shared: &Shared, req: &Req, user: &str) -> Reply {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(strip_bom(&req.body)) else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("DeserializationFailure"), "The body is not a JSON object.");
    };
    let field = |name: &str| body.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str());
    let (Some(agent), Some(endpoint), Some(culture)) = (field("userAgent"), field("endpointId"), field("culture")) else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "userAgent, endpointId and culture are required.");
    };
    if agent.len() > 100 {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "userAgent is too long.");
    }
    let now = Instant::now();
    let mut st = shared.lock();
    st.expire_idle(&shared.config, now, &shared.counters);
    let (id, created) = st.create_app(user, endpoint, agent, culture, shared.config.min_poll_timeout, now);
    if created {
        Counters::bump(&shared.counters.applications_created);
    }
    let app = &st.apps[&id];
    Reply::json(if created { StatusCode::CREATED } else { StatusCode::OK }, &resources::application(app)).header(header::LOCATION, app_path(id))
}
