//! Invitations, both kinds: starting a call or a messaging conversation, and what a client
//! does with an audio/video or messaging invitation (accept, decline, cancel).

use super::ctx::{fallback, At};
use super::ctx::{is_operation, operation_only, send};
use crate::sim::calls;
use crate::sim::messaging;
use crate::sim::model::{CallCommand, CallSpec, Direction, Phase};
use crate::sim::paths;
use crate::sim::reply::Reply;
use crate::sim::resources;
use crate::sim::shared::Answer;
use crate::sim::shared::{json_body, member, not_found, Req, Shared};
use crate::sim::state::SimState;
use axum::http::{header, StatusCode};
use std::sync::Arc;
use std::sync::MutexGuard;

/// The routes of this family, in the order a pool would match them.
pub(crate) fn route(at: &At, mut st: MutexGuard<'_, SimState>, rest: &[&str]) -> Answer {
    let At { shared, req, user, id, get, post } = *at;
    match rest {
        ["communication", "messaginginvitations"] if post => {
            let user = user.to_string();
            drop(st);
            messaging::start(shared, &json_body(req), id, &user).into()
        }
        ["communication", "audiovideoinvitations"] if post => {
            drop(st);
            start_outgoing(shared, req, id).into()
        }
        ["communication", "messaginginvitations", inv, action @ ..] => match messaging::invitation_route(&mut st, req, id, inv, action) {
            Some(reply) => reply.into(),
            None if get && is_operation(action) => operation_only().into(),
            None => not_found().into(),
        },
        ["communication", "audiovideoinvitations", inv, action @ ..] => {
            let Some(call) = st.calls.values().find(|c| c.app_id == id && c.invitation_id == *inv) else {
                return not_found().into();
            };
            match action {
                [] if get => Reply::json(StatusCode::OK, &resources::invitation(call)).into(),
                ["acceptwithanswer"] if post && call.direction == Direction::Incoming => {
                    // The answer is an SDP (REFERENCE.md §5: `Content-Type: application/sdp` → 204).
                    let sdp = req
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|ct| ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")));
                    if !sdp {
                        return Reply::error(
                            StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            "UnsupportedMediaType",
                            None,
                            "acceptWithAnswer takes an SDP answer (Content-Type: application/sdp).",
                        )
                        .into();
                    }
                    send(call, CallCommand::Accept)
                }
                ["decline"] if post && call.direction == Direction::Incoming => send(call, CallCommand::Decline),
                // Answered on a phone: the pool calls that number and bridges it (no media here).
                ["acceptwithphoneaudio"] if post && call.direction == Direction::Incoming => {
                    let body = json_body(req);
                    let number = member(&body, "phoneNumber").and_then(|v| v.as_str()).filter(|n| n.starts_with("tel:"));
                    let Some(number) = number.map(str::to_string) else {
                        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "phoneNumber must be a tel: URI.")
                            .into();
                    };
                    if call.phase != Phase::Ringing {
                        return Reply::error(StatusCode::CONFLICT, "Conflict", Some("InvalidState"), "The call is not ringing.").into();
                    }
                    let answered = send(call, CallCommand::Accept);
                    let call_id = call.id;
                    if let Some(c) = st.calls.get_mut(&call_id) {
                        c.answered_on = Some(number);
                    }
                    answered
                }
                ["cancel"] if post && call.direction == Direction::Outgoing => send(call, CallCommand::End),
                _ if get && is_operation(action) => operation_only().into(),
                _ => not_found().into(),
            }
        }
        _ => fallback(get, rest),
    }
}

/// `POST communication/audioVideoInvitations` (startAudioVideo): an outgoing call.
fn start_outgoing(shared: &Arc<Shared>, req: &Req, app_id: u64) -> Reply {
    let body = json_body(req);
    let field = |name: &str| member(&body, name).and_then(|v| v.as_str()).map(str::to_string);
    let Some(to) = field("to") else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "`to` is required.");
    };
    let spec = CallSpec {
        direction: Direction::Outgoing,
        remote: Some(to),
        subject: field("subject"),
        operation_id: field("operationId").or_else(|| req.query.get("operationid").cloned()),
        ..CallSpec::default()
    };
    match calls::start_call(shared, spec, Some(app_id)) {
        Ok(id) => {
            let st = shared.lock();
            match st.calls.get(&id) {
                Some(call) => Reply::json(StatusCode::CREATED, &resources::invitation(call)).header(header::LOCATION, paths::invitation_path(call)),
                None => Reply::error(StatusCode::GONE, "Gone", None, "The call ended."),
            }
        }
        Err(e) => Reply::error(StatusCode::CONFLICT, "Conflict", Some("MakeMeAvailableRequired"), &e),
    }
}
