//! Presence subscriptions, as a pool makes them (`presenceSubscriptions_ref.md`,
//! `presenceSubscription_ref.md`, `presenceSubscriptionMemberships_ref.md`, and the task pages
//! SubscribeToThePresenceOfSelectedContacts, ExtendAPresenceSubscription and
//! DeleteAPresenceSubscription):
//!
//! - `POST people/presenceSubscriptions {"duration": minutes (10–30), "uris": [sip…]}` → 201 a
//!   `presenceSubscription` (`self`, `memberships`, `addToPresenceSubscription`); on the
//!   channel, for each member a `contact` `added` (in `subscribedContacts`), then the
//!   `presenceSubscription` `added`, then each member's `contactPresence` `updated`;
//! - a watched contact's presence changing (the control API, or the account itself through
//!   `me/presence`) → `contactPresence` `updated` (sender `people`, `in` the contact) to every
//!   application subscribed to it;
//! - when two thirds of its duration have passed, `presenceSubscription` `updated` (embedding
//!   the subscription: "about to expire"); `POST presenceSubscriptions/<id>?duration=N` → 200
//!   extends it; at its end it is deleted (`contact` and `presenceSubscription` `deleted`), and
//!   extending it then answers 404;
//! - `POST presenceSubscriptionMemberships?presenceSubscriptionId=<id> {"contactUris": […]}`
//!   adds members; `GET` lists them; `DELETE presenceSubscriptionMemberships/<id>,<address>`
//!   removes one; `DELETE presenceSubscriptions/<id>` ends the subscription;
//! - an application deleted, expired or told to `resume` loses its subscriptions.
//!
//! A subscription minute lasts `SimConfig::presence_minute` (60 s; tests shorten it).

use super::channel::SimEvent;
use super::model::PresenceSub;
use super::paths::app_path;
use super::reply::Reply;
use super::shared::{json_body, member, Req, Shared};
use super::state::{Counters, SimState};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::time::{Duration, Instant};

/// The durations (minutes) `POST presenceSubscriptions` takes (presenceSubscriptions_ref.md).
pub(crate) const DURATIONS: std::ops::RangeInclusive<u64> = 10..=30;

/// The most contacts one application may watch in all its subscriptions (a pool's
/// `LimitExceeded`).
pub(crate) const MAX_MEMBERS: usize = 1000;

/// `sip:Bob@Contoso.com` → `bob@contoso.com`; None for anything that is not a SIP address.
fn address(uri: &str) -> Option<String> {
    let a = uri.trim();
    let a = a.strip_prefix("sip:").or_else(|| a.strip_prefix("SIP:")).unwrap_or(a).to_ascii_lowercase();
    (a.contains('@') && !a.contains('/') && !a.contains(',') && !a.chars().any(char::is_whitespace)).then_some(a)
}

fn people_path(app_id: u64) -> String {
    format!("{}/people", app_path(app_id))
}

fn resource(app_id: u64, id: &str) -> Value {
    let p = people_path(app_id);
    let m = format!("{p}/presenceSubscriptionMemberships?presenceSubscriptionId={id}");
    json!({"rel": "presenceSubscription", "id": id, "_links": {
        "self": {"href": format!("{p}/presenceSubscriptions/{id}")},
        "memberships": {"href": m},
        "addToPresenceSubscription": {"href": m},
    }})
}

fn people_event(app_id: u64, event: Value) -> SimEvent {
    SimEvent { sender_rel: "people", sender_href: people_path(app_id), event }
}

fn contact_event(app_id: u64, person: &str, kind: &str) -> SimEvent {
    let p = people_path(app_id);
    people_event(
        app_id,
        json!({"link": {"rel": "contact", "href": format!("{p}/{person}")}, "in": {"rel": "subscribedContacts", "href": format!("{p}/subscribedContacts")}, "type": kind}),
    )
}

fn presence_event(app_id: u64, person: &str) -> SimEvent {
    let p = people_path(app_id);
    people_event(
        app_id,
        json!({"link": {"rel": "contactPresence", "href": format!("{p}/{person}/presence")}, "in": {"rel": "contact", "href": format!("{p}/{person}")}, "type": "updated"}),
    )
}

fn subscription_event(app_id: u64, id: &str, kind: &str) -> SimEvent {
    let href = format!("{}/presenceSubscriptions/{id}", people_path(app_id));
    let mut event = json!({"link": {"rel": "presenceSubscription", "href": href}, "type": kind});
    if kind == "updated" {
        event["_embedded"] = json!({"presenceSubscription": resource(app_id, id)});
    }
    people_event(app_id, event)
}

/// A subscription's lifetime and when it warns, from now.
fn times(minute: Duration, minutes: u64, now: Instant) -> (Instant, Instant) {
    let life = minute * minutes as u32;
    (now + life, now + life * 2 / 3)
}

impl SimState {
    /// Tells every application watching `person` (an address, lower case) that their presence changed.
    pub(crate) fn presence_changed(&mut self, person: &str) {
        let apps: BTreeSet<u64> = self.presence_subs.values().filter(|s| s.members.contains(person)).map(|s| s.app_id).collect();
        for app in apps {
            self.push(app, vec![presence_event(app, person)]);
        }
    }

    /// Ends a subscription: its members' `contact` and its own `deleted` events.
    fn end_subscription(&mut self, id: &str) -> bool {
        let Some(s) = self.presence_subs.remove(id) else {
            return false;
        };
        let mut events: Vec<SimEvent> = s.members.iter().map(|m| contact_event(s.app_id, m, "deleted")).collect();
        events.push(subscription_event(s.app_id, &s.id, "deleted"));
        self.push(s.app_id, events);
        true
    }

    /// An application's subscriptions go with it (no events: its channel is gone or reset).
    pub(crate) fn forget_presence(&mut self, app_id: u64) {
        self.presence_subs.retain(|_, s| s.app_id != app_id);
    }

    fn members_of_app(&self, app_id: u64) -> usize {
        self.presence_subs.values().filter(|s| s.app_id == app_id).map(|s| s.members.len()).sum()
    }
}

fn bad(message: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), message)
}

fn gone() -> Reply {
    // ExtendAPresenceSubscription.md: an expired subscription answers this.
    Reply::error(
        StatusCode::NOT_FOUND,
        "NotFound",
        Some("ApplicationNotFound"),
        "An error occurred. Please retry. If the problem persists, contact your support team.",
    )
}

fn limit() -> Reply {
    Reply::error(StatusCode::FORBIDDEN, "Forbidden", Some("LimitExceeded"), "The user has reached the maximum number of subscriptions that can be created.")
}

/// The SIP URIs of a body's array member `key`, as addresses; an error names what is wrong.
fn uris(body: &Value, key: &str) -> Result<BTreeSet<String>, Reply> {
    let Some(list) = member(body, key).and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return Err(bad(&format!("`{key}` must be a non-empty array of SIP URIs.")));
    };
    list.iter().map(|u| u.as_str().and_then(address).ok_or_else(|| bad(&format!("`{key}`: {u} is not a SIP URI.")))).collect()
}

/// A query parameter, its name in any case.
fn query<'a>(req: &'a Req, name: &str) -> Option<&'a str> {
    req.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn duration_of(v: Option<&Value>) -> Result<u64, Reply> {
    let d = match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    d.filter(|d| DURATIONS.contains(d)).ok_or_else(|| bad("duration (minutes) must be from 10 to 30."))
}

/// Routes under an application's `people/` that concern subscriptions; None for any other path.
pub(crate) fn route(shared: &Arc<Shared>, st: &mut SimState, req: &Req, app_id: u64, path: &[&str]) -> Option<Reply> {
    let now = Instant::now();
    let minute = shared.config.presence_minute;
    let sub_of = |st: &SimState, id: &str| st.presence_subs.get(id).filter(|s| s.app_id == app_id).map(|s| s.id.clone());
    Some(match (&req.method, path) {
        (&Method::GET, ["presencesubscriptions"]) => {
            let all: Vec<Value> = st.presence_subs.values().filter(|s| s.app_id == app_id).map(|s| resource(app_id, &s.id)).collect();
            Reply::json(
                StatusCode::OK,
                &json!({"rel": "presenceSubscriptions", "_links": {"self": {"href": format!("{}/presenceSubscriptions", people_path(app_id))}},
                        "_embedded": {"presenceSubscription": all}}),
            )
        }
        (&Method::POST, ["presencesubscriptions"]) => {
            let body = json_body(req);
            let minutes = match duration_of(member(&body, "duration")) {
                Ok(m) => m,
                Err(r) => return Some(r),
            };
            let members = match uris(&body, "uris") {
                Ok(m) => m,
                Err(r) => return Some(r),
            };
            if st.members_of_app(app_id) + members.len() > MAX_MEMBERS {
                return Some(limit());
            }
            let id = format!("{:08x}", st.next_id().wrapping_mul(2_654_435_761) as u32);
            let (expires_at, warn_at) = times(minute, minutes, now);
            let mut events: Vec<SimEvent> = members.iter().map(|m| contact_event(app_id, m, "added")).collect();
            events.push(subscription_event(app_id, &id, "added"));
            events.extend(members.iter().map(|m| presence_event(app_id, m)));
            st.presence_subs.insert(id.clone(), PresenceSub { id: id.clone(), app_id, members, expires_at, warn_at, warned: false, extensions: 0 });
            st.push(app_id, events);
            Counters::bump(&shared.counters.presence_subscriptions_created);
            spawn_expiry(shared.clone(), id.clone());
            let href = format!("{}/presenceSubscriptions/{id}", people_path(app_id));
            Reply::json(StatusCode::CREATED, &resource(app_id, &id)).header(axum::http::header::LOCATION, href)
        }
        (&Method::GET, ["presencesubscriptions", id]) => match sub_of(st, id) {
            Some(id) => Reply::json(StatusCode::OK, &resource(app_id, &id)),
            None => gone(),
        },
        (&Method::POST, ["presencesubscriptions", id]) => {
            let Some(id) = sub_of(st, id) else {
                return Some(gone());
            };
            let body = json_body(req);
            let given = query(req, "duration").map(|d| Value::String(d.to_string())).or_else(|| member(&body, "duration").cloned());
            let minutes = match duration_of(given.as_ref()) {
                Ok(m) => m,
                Err(r) => return Some(r),
            };
            let s = st.presence_subs.get_mut(&id).expect("found above");
            (s.expires_at, s.warn_at) = times(minute, minutes, now);
            s.warned = false;
            s.extensions += 1;
            Counters::bump(&shared.counters.presence_subscriptions_extended);
            Reply::json(StatusCode::OK, &resource(app_id, &id))
        }
        (&Method::DELETE, ["presencesubscriptions", id]) => match sub_of(st, id) {
            Some(id) => {
                st.end_subscription(&id);
                Counters::bump(&shared.counters.presence_subscriptions_deleted);
                Reply::no_content()
            }
            None => gone(),
        },
        (&Method::GET, ["presencesubscriptionmemberships"]) if query(req, "presenceSubscriptionId").is_none() => {
            let ids: Vec<String> = st.presence_subs.values().filter(|s| s.app_id == app_id).map(|s| s.id.clone()).collect();
            let all: Vec<Value> = ids.iter().flat_map(|id| memberships(st, app_id, id)).collect();
            Reply::json(
                StatusCode::OK,
                &json!({"rel": "presenceSubscriptionMemberships",
                        "_links": {"self": {"href": format!("{}/presenceSubscriptionMemberships", people_path(app_id))}},
                        "_embedded": {"presenceSubscriptionMembership": all}}),
            )
        }
        (m, ["presencesubscriptionmemberships"]) if m == Method::GET || m == Method::POST => {
            let Some(id) = query(req, "presenceSubscriptionId").and_then(|id| sub_of(st, &id.to_ascii_lowercase())) else {
                return Some(gone());
            };
            if m == Method::POST {
                let added = match uris(&json_body(req), "contactUris") {
                    Ok(a) => a,
                    Err(r) => return Some(r),
                };
                let s = &st.presence_subs[&id];
                let added: Vec<String> = added.into_iter().filter(|a| !s.members.contains(a)).collect();
                if st.members_of_app(app_id) + added.len() > MAX_MEMBERS {
                    return Some(limit());
                }
                let mut events: Vec<SimEvent> = added.iter().map(|m| contact_event(app_id, m, "added")).collect();
                events.extend(added.iter().map(|m| presence_event(app_id, m)));
                st.presence_subs.get_mut(&id).expect("found above").members.extend(added);
                st.push(app_id, events);
            }
            let p = people_path(app_id);
            let all = memberships(st, app_id, &id);
            let status = if m == Method::POST { StatusCode::CREATED } else { StatusCode::OK };
            Reply::json(
                status,
                &json!({"rel": "presenceSubscriptionMemberships",
                        "_links": {"self": {"href": format!("{p}/presenceSubscriptionMemberships?presenceSubscriptionId={id}")}},
                        "_embedded": {"presenceSubscriptionMembership": all}}),
            )
        }
        (&Method::GET, ["presencesubscriptionmemberships", which]) => {
            let found = which.split_once(',').and_then(|(id, person)| {
                let id = sub_of(st, id)?;
                let href = format!("{}/presenceSubscriptionMemberships/{id},{person}", people_path(app_id));
                memberships(st, app_id, &id).into_iter().find(|m| m["_links"]["self"]["href"] == href.as_str())
            });
            match found {
                Some(m) => Reply::json(StatusCode::OK, &m),
                None => gone(),
            }
        }
        (&Method::DELETE, ["presencesubscriptionmemberships", which]) => {
            let Some((id, person)) = which.split_once(',') else {
                return Some(gone());
            };
            let Some(id) = sub_of(st, id) else {
                return Some(gone());
            };
            if !st.presence_subs.get_mut(&id).expect("found above").members.remove(person) {
                return Some(gone());
            }
            st.push(app_id, vec![contact_event(app_id, person, "deleted")]);
            Reply::no_content()
        }
        _ => return None,
    })
}

/// The memberships of subscription `id` (presenceSubscriptionMemberships_ref.md).
fn memberships(st: &SimState, app_id: u64, id: &str) -> Vec<Value> {
    let p = people_path(app_id);
    st.presence_subs[id]
        .members
        .iter()
        .map(|m| {
            json!({"rel": "presenceSubscriptionMembership", "_links": {
                "self": {"href": format!("{p}/presenceSubscriptionMemberships/{id},{m}")},
                "contact": {"href": format!("{p}/{m}")},
                "presenceSubscription": {"href": format!("{p}/presenceSubscriptions/{id}")},
            }})
        })
        .collect()
}

/// Warns when a subscription is about to expire and ends it when it does (an extension moves
/// both; a deleted one ends the task).
fn spawn_expiry(shared: Arc<Shared>, id: String) {
    tokio::spawn(async move {
        loop {
            let wake = {
                let mut st = shared.lock();
                let now = Instant::now();
                let Some(s) = st.presence_subs.get_mut(&id) else {
                    return;
                };
                if now >= s.expires_at {
                    st.end_subscription(&id);
                    Counters::bump(&shared.counters.presence_subscriptions_expired);
                    return;
                }
                if !s.warned && now >= s.warn_at {
                    s.warned = true;
                    let app = s.app_id;
                    st.push(app, vec![subscription_event(app, &id, "updated")]);
                    continue;
                }
                if s.warned {
                    s.expires_at
                } else {
                    s.warn_at
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    });
}

/// The control API's list: every live subscription, whose, of whom, and for how long still.
pub(crate) fn list(shared: &Shared) -> Reply {
    let st = shared.lock();
    let now = Instant::now();
    let all: Vec<Value> = st
        .presence_subs
        .values()
        .map(|s| {
            let user = st.apps.get(&s.app_id).map(|a| a.user.clone());
            json!({
                "id": s.id, "application": s.app_id, "user": user,
                "uris": s.members.iter().map(|m| format!("sip:{m}")).collect::<Vec<_>>(),
                "expires_in_ms": s.expires_at.saturating_duration_since(now).as_millis() as u64,
                "extensions": s.extensions,
            })
        })
        .collect();
    Reply::json(StatusCode::OK, &Value::Array(all))
}
