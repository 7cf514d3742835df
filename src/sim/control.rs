//! `/sim/v1/`: the control API that tests and script authors drive the simulator with.
//!
//! - `POST /sim/v1/calls` (a `CallSpec` as JSON, plus optional `"application"`) → 201 `{"id", "conversation", "invitation"}`
//! - `GET /sim/v1/calls` → the live calls, then the latest 1000 ended ones (`phase` `Ended`, with
//!   their `outcome`: answered, missed, declined, cancelled or forwarded)
//! - `DELETE /sim/v1/calls/<id>` → hang up (or cancel while ringing)
//! - `POST /sim/v1/calls/<id>/accept` | `/decline` → as a client's acceptWithAnswer / decline
//! - `POST /sim/v1/faults` (`{"kind": …, "count": n}`, see `Fault`) → 204
//! - `GET /sim/v1/counters` → request and event counters
//! - `GET /sim/v1/applications` → the live applications
//! - `PUT /sim/v1/users/<name>` `{"password": …}` → 204: the account's password is now that
//!   (an admin resetting it: the next password grant with the old one gets `invalid_grant`)
//! - `GET /sim/v1/quirks`, `PUT /sim/v1/quirks` `["no_embedded_me", …]` → the quirks on (all
//!   of them replaced; `[]` for none)
//! - `GET /sim/v1/presence` → each account's availability, note and call forwarding, as scripts set them
//! - `PUT /sim/v1/contacts/<uri>/presence` `{"availability"}` → 204: what every account sees of that
//!   contact (a change goes as a `contactPresence` event to the applications subscribed to it)
//! - `GET /sim/v1/presence_subscriptions` → the live presence subscriptions (`id`, `user`,
//!   `application`, `uris`, `expires_in_ms`, `extensions`)
//! - `GET /sim/v1/messages` → the instant messages, both ways (`from`, `to`, `text`, `conversation`)
//! - `POST /sim/v1/messages` `{"from", "to", "text"}` → someone (`from`) sends the account `to`
//!   an IM: a new messaging invitation, or a message in the conversation they already have
//! - `GET /sim/v1/conversations` → the messaging conversations, live then ended, with their state
//! - `GET /sim/v1/settings` → what it runs with (origin, users, generator, lifetimes)

use super::calls;
use super::fault::{Fault, FAULT_KINDS};
use super::model::{CallCommand, CallSpec, WAIT_FOR_ACCEPT_MAX};
use super::paths;
use super::quirks::Quirks;
use super::reply::Reply;
use super::shared::{strip_bom, Req, Shared};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn route(shared: &Arc<Shared>, req: &Req, rest: &[&str]) -> Reply {
    let m = &req.method;
    match rest {
        ["calls"] if m == Method::POST => start(shared, req),
        ["calls"] if m == Method::GET => list_calls(shared),
        ["calls", id] if m == Method::DELETE => command(shared, id, CallCommand::End),
        ["calls", id, "accept"] if m == Method::POST => command(shared, id, CallCommand::Accept),
        ["calls", id, "decline"] if m == Method::POST => command(shared, id, CallCommand::Decline),
        ["faults"] if m == Method::POST => fault(shared, req),
        ["counters"] if m == Method::GET => Reply::json(StatusCode::OK, &shared.counters.snapshot()),
        ["applications"] if m == Method::GET => list_apps(shared),
        ["settings"] if m == Method::GET => settings(shared),
        ["presence"] if m == Method::GET => presence(shared),
        ["presence_subscriptions"] if m == Method::GET => super::presence::list(shared),
        ["messages"] if m == Method::GET => super::messaging::list(shared),
        ["messages"] if m == Method::POST => match serde_json::from_slice::<Value>(strip_bom(&req.body)) {
            Ok(body) => super::messaging::deliver(shared, &body),
            Err(e) => bad(format!("body is not JSON: {e}")),
        },
        ["conversations"] if m == Method::GET => super::messaging::list_conversations(shared),
        ["quirks"] if m == Method::GET => Reply::json(StatusCode::OK, &super::quirks::names(&shared.lock().quirks)),
        ["quirks"] if m == Method::PUT => set_quirks(shared, req),
        ["users", name] if m == Method::PUT => set_password(shared, name, req),
        ["contacts", uri, "presence"] if m == Method::PUT => set_contact_presence(shared, uri, req),
        _ => Reply::error(StatusCode::NOT_FOUND, "NotFound", None, "Unknown control API path."),
    }
}

fn presence(shared: &Shared) -> Reply {
    let st = shared.lock();
    let mut users: Vec<&String> = st.users.keys().collect();
    users.sort();
    let out: serde_json::Map<String, Value> = users
        .into_iter()
        .map(|u| {
            let p = st.profiles.get(u).cloned().unwrap_or_default();
            let available = st.apps.values().any(|a| &a.user == u && a.available);
            let availability = p.availability.unwrap_or_else(|| if available { "Online".into() } else { "Offline".into() });
            (
                u.clone(),
                json!({"availability": availability, "note": p.note,
                               "forwarding": {"setting": p.forwarding.setting, "target": p.forwarding.target}}),
            )
        })
        .collect();
    Reply::json(StatusCode::OK, &Value::Object(out))
}

/// `PUT /sim/v1/contacts/<uri>/presence {"availability"}`: what everyone sees of that contact.
fn set_contact_presence(shared: &Shared, uri: &str, req: &Req) -> Reply {
    let body: Value = match serde_json::from_slice(strip_bom(&req.body)) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let allowed: Vec<&str> = super::directory::contact_availabilities().collect();
    let Some(a) = body.get("availability").and_then(Value::as_str).filter(|a| allowed.contains(a)) else {
        return bad(format!("expected {{\"availability\": …}}, one of {allowed:?}"));
    };
    let person = uri.strip_prefix("sip:").unwrap_or(uri);
    if !person.contains('@') {
        return bad(format!("{uri} is not a sip: address"));
    }
    let person = person.to_ascii_lowercase();
    let mut st = shared.lock();
    if st.contact_presence.insert(person.clone(), a.to_string()).as_deref() != Some(a) {
        st.presence_changed(&person);
    }
    Reply::no_content()
}

fn set_quirks(shared: &Shared, req: &Req) -> Reply {
    match serde_json::from_slice::<Quirks>(strip_bom(&req.body)) {
        Ok(q) => {
            let mut st = shared.lock();
            st.quirks = q;
            Reply::json(StatusCode::OK, &super::quirks::names(&st.quirks))
        }
        Err(e) => bad(format!("expected a list of quirk names: {e}")),
    }
}

fn set_password(shared: &Shared, name: &str, req: &Req) -> Reply {
    let body: Value = match serde_json::from_slice(strip_bom(&req.body)) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let Some(password) = body.get("password").and_then(Value::as_str) else {
        return bad("expected {\"password\": \"…\"}".into());
    };
    if set_user_password(shared, name, password) {
        Reply::no_content()
    } else {
        Reply::error(StatusCode::NOT_FOUND, "NotFound", None, "No such user.")
    }
}

/// Sets an existing account's password; false if there is no such account.
pub(crate) fn set_user_password(shared: &Shared, name: &str, password: &str) -> bool {
    let mut st = shared.lock();
    match st.users.get_mut(&name.to_ascii_lowercase()) {
        Some(p) => {
            *p = password.to_string();
            true
        }
        None => false,
    }
}

/// The settings in force, so a person (or a test) can see which defaults applied.
fn settings(shared: &Shared) -> Reply {
    let c = &shared.config;
    Reply::json(
        StatusCode::OK,
        &json!({
            "origin": shared.origin,
            "users": c.users.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            "calls_per_minute": c.calls_per_minute,
            "ring_secs": c.ring_time.as_secs_f64(),
            "call_duration_secs": c.call_duration.as_secs_f64(),
            "wait_for_accept_max_secs": WAIT_FOR_ACCEPT_MAX.as_secs(),
            "token_lifetime_secs": c.token_lifetime.as_secs(),
            "app_idle_secs": c.app_idle_timeout.as_secs(),
            "min_poll_timeout_secs": c.min_poll_timeout.as_secs(),
            "max_poll_timeout_secs": c.max_poll_timeout.as_secs(),
            "quirks": super::quirks::names(&shared.lock().quirks),
        }),
    )
}

fn bad(message: String) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), &message)
}

fn start(shared: &Arc<Shared>, req: &Req) -> Reply {
    let mut body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(strip_bom(&req.body)) {
            Ok(v) => v,
            Err(e) => return bad(format!("body is not JSON: {e}")),
        }
    };
    // (serde would also read a struct from a list: `[]` was a call with every default.)
    if !body.is_object() {
        let got = match body {
            Value::Array(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return bad(format!("expected a call spec, a JSON object such as {{\"remote\": \"sip:bob@contoso.com\"}}, got {got}"));
    }
    let app = body.as_object_mut().and_then(|o| o.remove("application")).and_then(|v| v.as_u64());
    let spec: CallSpec = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => return bad(format!("not a call spec: {e}")),
    };
    match calls::start_call(shared, spec, app) {
        Ok(id) => {
            let st = shared.lock();
            let call = &st.calls[&id];
            Reply::json(StatusCode::CREATED, &json!({"id": id, "conversation": paths::conversation_path(call), "invitation": paths::invitation_path(call)}))
        }
        Err(e) => Reply::error(StatusCode::CONFLICT, "Conflict", None, &e),
    }
}

fn list_calls(shared: &Shared) -> Reply {
    let st = shared.lock();
    let calls: Vec<Value> = st
        .calls
        .values()
        .map(|c| {
            json!({"id": c.id, "application": c.app_id, "direction": c.direction.as_str(), "remote": c.remote_uri,
                   "phase": format!("{:?}", c.phase), "conversation": paths::conversation_path(c),
                   "invitation": paths::invitation_path(c), "answered_on": c.answered_on, "outcome": null})
        })
        .chain(st.ended_calls.iter().cloned())
        .collect();
    Reply::json(StatusCode::OK, &Value::Array(calls))
}

fn list_apps(shared: &Shared) -> Reply {
    let st = shared.lock();
    let apps: Vec<Value> = st
        .apps
        .values()
        .map(|a| {
            json!({"id": a.id, "user": a.user, "available": a.available, "endpointId": a.endpoint_id, "userAgent": a.user_agent,
                        "modalities": a.modalities, "pollTimeoutSecs": a.channel.timeout.as_secs(),
                        "self": paths::app_path(a.id), "pollParked": a.channel.has_waiter()})
        })
        .collect();
    Reply::json(StatusCode::OK, &Value::Array(apps))
}

fn command(shared: &Shared, id: &str, cmd: CallCommand) -> Reply {
    match id.parse::<u64>() {
        Ok(id) if command_call(shared, id, cmd) => Reply::no_content(),
        _ => Reply::error(StatusCode::NOT_FOUND, "NotFound", None, "No such call."),
    }
}

/// Sends a command to a live call; false if there is none with that id.
pub(crate) fn command_call(shared: &Shared, id: u64, cmd: CallCommand) -> bool {
    let st = shared.lock();
    st.calls.get(&id).is_some_and(|c| c.commands.send(cmd).is_ok())
}

/// The most uses one `POST /sim/v1/faults` may ask for (a count is stored, never expanded).
pub(crate) const MAX_FAULT_COUNT: u64 = 1_000_000;

fn fault(shared: &Shared, req: &Req) -> Reply {
    let mut body: Value = match serde_json::from_slice(strip_bom(&req.body)) {
        Ok(v) => v,
        Err(e) => return bad(format!("body is not JSON: {e}")),
    };
    let count = match body.as_object_mut().and_then(|o| o.remove("count")) {
        None => 1,
        Some(c) => match c.as_u64() {
            Some(n) if n <= MAX_FAULT_COUNT => n,
            _ => return bad(format!("`count` must be a whole number from 0 to {MAX_FAULT_COUNT}, got {c}")),
        },
    };
    let user = body.as_object_mut().and_then(|o| o.remove("user")).and_then(|u| u.as_str().map(str::to_string));
    match serde_json::from_value::<Fault>(body) {
        Ok(Fault::ServerError { status, .. }) if !(500..=599).contains(&status) => bad(format!("`status` of a server_error must be 500 to 599, got {status}")),
        Ok(f) => {
            inject(shared, f, count as usize, user.as_deref());
            Reply::no_content()
        }
        Err(e) => bad(format!("not a fault ({e}); kinds: {}", FAULT_KINDS.join(", "))),
    }
}

/// Applies `token_expiry` and `application_gone` at once; queues the others for the next polls.
/// With `user`, only that account's tokens, applications or event-channel requests.
pub(crate) fn inject(shared: &Shared, fault: Fault, count: usize, user: Option<&str>) {
    let mut st = shared.lock();
    let theirs = |u: &str| user.is_none_or(|w| w.eq_ignore_ascii_case(u));
    match fault {
        Fault::TokenExpiry => {
            st.tokens.retain(|_, t| !theirs(&t.user));
        }
        Fault::ApplicationGone => {
            let ids: Vec<u64> = st.apps.values().filter(|a| theirs(&a.user)).map(|a| a.id).collect();
            for id in ids {
                st.remove_app(id);
            }
        }
        other if count > 0 => st.faults.push_back((user.map(str::to_string), other, count as u64)),
        _ => {}
    }
}
