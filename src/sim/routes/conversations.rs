//! Conversations: the active list, messaging conversations (in `messaging.rs`), and a call's
//! conversation with its modalities and participants.

use super::ctx::{fallback, At};
use super::ctx::{is_operation, operation_only, send};
use crate::sim::messaging;
use crate::sim::model::{CallCommand, Phase};
use crate::sim::paths::{app_path, remote_participant_path};
use crate::sim::quirks;
use crate::sim::reply::Reply;
use crate::sim::resources;
use crate::sim::shared::not_found;
use crate::sim::shared::Answer;
use crate::sim::state::SimState;
use axum::http::StatusCode;
use std::sync::MutexGuard;

/// The routes of this family, in the order a pool would match them.
pub(crate) fn route(at: &At, mut st: MutexGuard<'_, SimState>, rest: &[&str]) -> Answer {
    let At { req, id, get, post, .. } = *at;
    match rest {
        ["communication", "conversations", conv, modality @ ..] if conv.parse::<u64>().is_ok_and(|c| st.im_of(id, c).is_some()) => {
            let conv = conv.parse::<u64>().expect("checked in the guard");
            match messaging::conversation_route(&mut st, req, id, conv, modality) {
                Some(reply) => reply.into(),
                None if get && is_operation(modality) => operation_only().into(),
                None => not_found().into(),
            }
        }
        ["communication", "conversations"] if get => {
            // `?filter=active` (the only form linked): the conversations of calls in progress.
            let mut live: Vec<serde_json::Value> =
                st.calls.values().filter(|c| c.app_id == id && c.phase != Phase::Ended).map(resources::conversation).collect();
            live.extend(messaging::active(&st, id));
            let body = serde_json::json!({
                "rel": "conversations",
                "_links": {"self": {"href": format!("{}/communication/conversations?filter=active", app_path(id))}},
                "_embedded": {"conversation": live},
            });
            Reply::json(StatusCode::OK, &body).into()
        }
        ["communication", "conversations", conv, modality @ ..] => {
            let Some(call) = conv.parse::<u64>().ok().and_then(|c| st.calls.get(&c)).filter(|c| c.app_id == id) else {
                return not_found().into();
            };
            match modality {
                [] if get => Reply::json(StatusCode::OK, &resources::conversation(call)).into(),
                ["audiovideo"] if get => Reply::json(StatusCode::OK, &resources::audio_video(call)).into(),
                ["audiovideo", "audiovideosession"] if get && call.phase == Phase::Connected => Reply::json(StatusCode::OK, &resources::session(call)).into(),
                ["audiovideo", "stopaudiovideo" | "stopaudio"] if post => send(call, CallCommand::End),
                ["participants"] if get => Reply::json(StatusCode::OK, &resources::participants(call)).into(),
                ["participants", "local"] if get => Reply::json(StatusCode::OK, &resources::local_participant(call)).into(),
                ["participants", who]
                    if get
                        && (remote_participant_path(call).to_ascii_lowercase().ends_with(&format!("/{who}"))
                            || quirks::opaque_id(&call.remote_uri) == *who) =>
                {
                    Reply::json(StatusCode::OK, &resources::participant(call)).into()
                }
                [m @ ("messaging" | "datacollaboration" | "applicationsharing")] if get => {
                    let rel = match *m {
                        "messaging" => "messaging",
                        "datacollaboration" => "dataCollaboration",
                        _ => "applicationSharing",
                    };
                    Reply::json(StatusCode::OK, &resources::idle_modality(call, rel)).into()
                }
                _ if get && is_operation(modality) => operation_only().into(),
                _ => not_found().into(),
            }
        }
        _ => fallback(get, rest),
    }
}
