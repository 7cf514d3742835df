//! `communication` itself and its audio/video policies.

use super::ctx::{fallback, At};
use crate::sim::directory;
use crate::sim::reply::Reply;
use crate::sim::resources;
use crate::sim::shared::Answer;
use crate::sim::state::SimState;
use axum::http::StatusCode;
use std::sync::MutexGuard;

/// The routes of this family, in the order a pool would match them.
pub(crate) fn route(at: &At, mut st: MutexGuard<'_, SimState>, rest: &[&str]) -> Answer {
    let get = at.get;
    let app = at.app(&mut st);
    match rest {
        ["communication"] if get => Reply::json(StatusCode::OK, &resources::communication(app)).into(),
        ["communication", "audiovideopolicies"] if get => Reply::json(StatusCode::OK, &directory::audio_video_policies(app)).into(),
        _ => fallback(get, rest),
    }
}
