//! The directory: people (contacts, search, anyone by address, their presence, note and
//! location), presence subscriptions, photos, policies and online meetings.

use super::ctx::{fallback, At};
use crate::sim::directory;
use crate::sim::presence;
use crate::sim::reply::Reply;
use crate::sim::shared::not_found;
use crate::sim::shared::Answer;
use crate::sim::state::SimState;
use axum::http::StatusCode;
use std::sync::MutexGuard;

/// The routes of this family, in the order a pool would match them.
pub(crate) fn route(at: &At, mut st: MutexGuard<'_, SimState>, rest: &[&str]) -> Answer {
    let At { shared, req, id, get, .. } = *at;
    let mut users: Vec<String> = st.users.keys().cloned().collect();
    users.sort();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let app = at.app(&mut st);
    match rest {
        ["photos", _] if get => Reply::bytes(StatusCode::OK, "image/png", directory::PHOTO_PNG).into(),
        ["policies"] if get => Reply::json(StatusCode::OK, &directory::policies(app)).into(),
        ["people"] if get => Reply::json(StatusCode::OK, &directory::people(app)).into(),
        ["people", sub @ ..] if sub.first().is_some_and(|s| s.starts_with("presencesubscription")) => match presence::route(shared, &mut st, req, id, sub) {
            Some(reply) => reply.into(),
            None => not_found().into(),
        },
        ["onlinemeetings"] if get => Reply::json(StatusCode::OK, &directory::online_meetings(app)).into(),
        ["onlinemeetings", "myonlinemeetings"] if get => Reply::json(StatusCode::OK, &directory::my_online_meetings(app)).into(),
        ["people", "contacts"] if get => Reply::json(StatusCode::OK, &directory::my_contacts(app, &users)).into(),
        ["people", "search"] if get => match req.query.get("query").filter(|q| !q.trim().is_empty()) {
            None => Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "search needs ?query=.").into(),
            Some(q) => Reply::json(StatusCode::OK, &directory::search(app, &users, q)).into(),
        },
        ["people", person, what @ ("presence" | "note" | "location")] if get && person.contains('@') => {
            let resource = match *what {
                "presence" => directory::contact_presence(id, person, &st.availability_of(person)),
                "note" => directory::contact_note(id, person, &st.profiles.get(*person).map(|p| p.note.clone()).unwrap_or_default()),
                _ => directory::contact_location(id, person),
            };
            Reply::json(StatusCode::OK, &resource).into()
        }
        // Anyone the pool can name: the simulator's accounts and the callers it invents.
        ["people", person] if get && person.contains('@') => Reply::json(StatusCode::OK, &directory::contact(app, person)).into(),
        _ => fallback(get, rest),
    }
}
