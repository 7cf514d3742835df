//! `me` and what hangs from it: presence and note (set both ways), location, phones, call
//! forwarding, makeMeAvailable and reportMyActivity.

use super::ctx::{fallback, At};
use crate::sim::channel::SimEvent;
use crate::sim::directory;
use crate::sim::model::{App, Forwarding};
use crate::sim::paths::app_path;
use crate::sim::quirks::Quirk;
use crate::sim::reply::Reply;
use crate::sim::resources;
use crate::sim::shared::Answer;
use crate::sim::shared::{json_body, member, not_found};
use crate::sim::state::Counters;
use crate::sim::state::SimState;
use axum::http::StatusCode;
use serde_json::json;
use std::sync::MutexGuard;

/// The routes of this family, in the order a pool would match them.
pub(crate) fn route(at: &At, mut st: MutexGuard<'_, SimState>, rest: &[&str]) -> Answer {
    let At { shared, req, user, get, post, .. } = *at;
    let no_me = st.quirks.contains(&Quirk::NoMe);
    let profile = st.profiles.get(user).cloned().unwrap_or_default();
    let app = at.app(&mut st);
    match rest {
        ["me"] if get && no_me => not_found().into(),
        ["me"] if get => Reply::json(StatusCode::OK, &resources::me(app)).into(),
        ["me", "presence"] if get => Reply::json(StatusCode::OK, &directory::presence(app, &profile)).into(),
        ["me", "note"] if get => Reply::json(StatusCode::OK, &directory::note(app, &profile)).into(),
        ["me", what @ ("presence" | "note")] if post => {
            let body = json_body(req);
            let field = |k: &str| member(&body, k).and_then(|v| v.as_str()).map(str::to_string);
            let bad = |m: String| Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), &m).into();
            let user = user.to_string();
            let mut changed = profile.clone();
            if *what == "presence" {
                match field("availability") {
                    Some(a) if directory::AVAILABILITIES.contains(&a.as_str()) => changed.availability = Some(a),
                    other => return bad(format!("availability must be one of {:?}, not {other:?}", directory::AVAILABILITIES)),
                }
            } else {
                match field("message") {
                    Some(m) if m.chars().count() <= 1000 => changed.note = m,
                    _ => return bad("message must be a text of at most 1000 characters".into()),
                }
            }
            let rel = if *what == "presence" { "presence" } else { "note" };
            st.profiles.insert(user.clone(), changed);
            announce_to_user(&mut st, &user, rel);
            if rel == "presence" {
                st.presence_changed(&user);
            }
            Reply::no_content().into()
        }
        ["me", "location"] if get => Reply::json(StatusCode::OK, &directory::location(app)).into(),
        ["me", "phones"] if get => Reply::json(StatusCode::OK, &directory::phones(app)).into(),
        ["me", "phones", "work"] if get => Reply::json(StatusCode::OK, &directory::phone(app)).into(),
        ["me", "callforwardingsettings"] if get => Reply::json(StatusCode::OK, &directory::call_forwarding_settings(app, &profile)).into(),
        ["me", "callforwardingsettings", "immediateforwardsettings"] if get => {
            Reply::json(StatusCode::OK, &directory::immediate_forward_settings(app, &profile)).into()
        }
        ["me", "callforwardingsettings", "simultaneousringsettings"] if get => {
            Reply::json(StatusCode::OK, &directory::simultaneous_ring_settings(app, &profile)).into()
        }
        ["me", "callforwardingsettings", op @ ..] if post && forwarding_operation(op).is_some() => {
            let body = json_body(req);
            let target = member(&body, "target").and_then(|v| v.as_str());
            let (setting, needs_target) = forwarding_operation(op).expect("checked in the guard");
            let target = match (needs_target, target) {
                (false, _) => {
                    if setting == "ImmediateForward" {
                        "voicemail".to_string()
                    } else {
                        String::new()
                    }
                }
                (true, Some(t)) if t.starts_with("sip:") || t.starts_with("tel:") => t.to_string(),
                (true, other) => {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        Some("ParameterValidationFailure"),
                        &format!("target must be a sip: or tel: URI, not {other:?}"),
                    )
                    .into()
                }
            };
            let user = user.to_string();
            let mut changed = profile.clone();
            changed.forwarding = Forwarding { setting, target };
            st.profiles.insert(user.clone(), changed);
            announce_to_user(&mut st, &user, "callForwardingSettings");
            Reply::no_content().into()
        }
        ["me", "makemeavailable"] if post => {
            if app.available {
                return Reply::error(StatusCode::CONFLICT, "Conflict", Some("AlreadyExists"), "makeMeAvailable was already done.").into();
            }
            app.available = true;
            app.modalities = member(&json_body(req), "supportedModalities").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
            app.etag += 1;
            let events = available_events(app);
            app.channel.push(events);
            Reply::no_content().into()
        }
        ["me", "reportmyactivity"] | ["reportmyactivity"] if post => {
            if !app.available {
                return Reply::error(StatusCode::CONFLICT, "Conflict", Some("MakeMeAvailableRequired"), "Call makeMeAvailable first.").into();
            }
            Counters::bump(&shared.counters.report_my_activity);
            Reply::no_content().into()
        }
        _ => fallback(get, rest),
    }
}

/// Tells every application of `user` that its `me/<rel>` resource was updated, as a pool does
/// when one client changes the account.
fn announce_to_user(st: &mut SimState, user: &str, rel: &str) {
    let apps: Vec<u64> = st.apps.values().filter(|a| a.user == user).map(|a| a.id).collect();
    for id in apps {
        let p = app_path(id);
        let event = json!({"link": {"rel": rel, "href": format!("{p}/me/{rel}")}, "type": "updated"});
        st.push(id, vec![SimEvent { sender_rel: "me", sender_href: format!("{p}/me"), event }]);
    }
}

/// A forwarding operation under `me/callForwardingSettings`: the setting it makes, and whether
/// it takes a `target`.
fn forwarding_operation(path: &[&str]) -> Option<(&'static str, bool)> {
    match path {
        ["turnoffcallforwarding"] => Some(("Off", false)),
        ["immediateforwardsettings", "immediateforwardtocontact"] => Some(("ImmediateForward", true)),
        ["immediateforwardsettings", "immediateforwardtovoicemail"] => Some(("ImmediateForward", false)),
        ["simultaneousringsettings", "simultaneousringtocontact"] => Some(("SimultaneousRing", true)),
        _ => None,
    }
}

/// The events makeMeAvailable produces (`events-response-next.json`).
fn available_events(app: &App) -> Vec<SimEvent> {
    let p = app_path(app.id);
    let me = |rel: &str, kind: &str, href: String| SimEvent {
        sender_rel: "me",
        sender_href: format!("{p}/me"),
        event: json!({"link": {"rel": rel, "href": href}, "type": kind}),
    };
    vec![
        SimEvent {
            sender_rel: "communication",
            sender_href: format!("{p}/communication"),
            event: json!({"link": {"rel": "communication", "href": format!("{p}/communication")},
                          "_embedded": {"communication": resources::communication(app)}, "type": "updated"}),
        },
        me("me", "updated", format!("{p}/me")),
        me("presence", "added", format!("{p}/me/presence")),
        me("note", "added", format!("{p}/me/note")),
        me("location", "added", format!("{p}/me/location")),
    ]
}
