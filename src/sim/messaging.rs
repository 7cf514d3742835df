//! Instant-message conversations, both ways, in the flows of the documentation's "Send an IM"
//! and "Receive an IM" (`doc-SendAnIM-*`, `doc-ReceiveAnIM-*`):
//!
//! - outgoing (`startMessaging`, with or without a first message as `_links.message.href =
//!   "data:text/plain,…"`): conversation added, messagingInvitation started, messaging updated
//!   (Connected), conversation updated, invitation completed (Success), and the first message's
//!   `message` completed (with `_embedded.message`); the remote party accepts at once;
//! - incoming (the control API's `POST /sim/v1/messages`): conversation added (Incoming) and
//!   messagingInvitation started (with `accept`, `decline` and the first message); `accept` →
//!   messaging updated, conversation updated, invitation completed (Success), then each waiting
//!   message as `message` completed (Incoming); `decline` → invitation completed (Failure,
//!   Declined) and conversation deleted. A message to an account already in a connected
//!   conversation with the sender arrives in that conversation;
//! - `sendMessage` (`POST …/messaging/messages`, the text as `text/plain`) and `stopMessaging`
//!   (`POST …/messaging/terminate`: messaging updated (Disconnected), conversation deleted).
//!
//! Every message, both ways, goes in the record the control API shows (`GET /sim/v1/messages`,
//! the latest 1000). Resources are in `messaging_res.rs`.

use super::channel::SimEvent;
use super::messaging_res as res;
use super::model::{ImConversation, ImPhase, Message, SentMessage};
use super::paths::app_path;
use super::reply::{self, Reply};
use super::shared::{member, strip_bom, Req, Shared};
use super::state::SimState;
use axum::http::{header, StatusCode};
use serde_json::{json, Value};

/// How many messages and ended conversations the simulator remembers (a script sending in a
/// loop does not grow it without bound).
pub(crate) const KEEP: usize = 1000;

/// How many messages may wait for an invitation to be accepted.
const MAX_WAITING: usize = 100;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `data:text/plain[;charset=utf-8],Hello+there%21` → `Hello there!` (`+` is a space, as in
/// the documentation's samples and what clients send).
pub(crate) fn data_text(href: &str) -> Option<String> {
    let rest = href.strip_prefix("data:")?;
    let (kind, data) = rest.split_once(',')?;
    if !kind.to_ascii_lowercase().starts_with("text/plain") {
        return None;
    }
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={data}").as_bytes()).next().map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

fn bad(m: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), m)
}

fn conflict(subcode: &str, m: &str) -> Reply {
    Reply::error(StatusCode::CONFLICT, "Conflict", Some(subcode), m)
}

/// A message text a pool takes: 1 to 10000 characters.
fn valid_text(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= 10_000
}

impl SimState {
    /// Drops an application's conversations (it was deleted or expired).
    pub(crate) fn forget_im(&mut self, app_id: u64) {
        let ids: Vec<u64> = self.im.values().filter(|c| c.app_id == app_id).map(|c| c.id).collect();
        for id in ids {
            self.end_im(id, ImPhase::Ended);
        }
    }

    fn record(&mut self, from: &str, to: &str, text: &str, conversation: String) {
        if self.messages.len() >= KEEP {
            self.messages.pop_front();
        }
        self.messages.push_back(SentMessage { from: from.to_string(), to: to.to_string(), text: text.to_string(), conversation });
    }

    /// Ends a conversation: it stops answering; the newest `KEEP` ended ones stay listed.
    fn end_im(&mut self, id: u64, phase: ImPhase) {
        if let Some(mut c) = self.im.remove(&id) {
            c.phase = phase;
            if self.ended_im.len() >= KEEP {
                self.ended_im.pop_front();
            }
            self.ended_im.push_back(c);
        }
    }

    /// The live conversation `id` of application `app_id`.
    pub(crate) fn im_of(&self, app_id: u64, id: u64) -> Option<&ImConversation> {
        self.im.get(&id).filter(|c| c.app_id == app_id)
    }

    fn new_im(&mut self, app_id: u64, direction: &'static str, local: String, remote: String, first: Option<String>) -> u64 {
        let id = self.next_id();
        let invitation_id = self.next_id();
        let thread_id = format!("{:032x}", (id as u128) * 0x2545_f491_4f6c_dd1d);
        let phase = if direction == "Incoming" { ImPhase::Invited } else { ImPhase::Connected };
        self.im.insert(
            id,
            ImConversation { id, app_id, invitation_id, direction, local, remote, phase, first, waiting: Vec::new(), messages: Vec::new(), thread_id },
        );
        // A pool ends idle conversations; here the oldest goes once an application has `KEEP`
        // (a script starting conversations in a loop does not grow the simulator without bound).
        let live: Vec<u64> = self.im.values().filter(|c| c.app_id == app_id).map(|c| c.id).collect();
        if live.len() > KEEP {
            let oldest = &self.im[&live[0]];
            let events = vec![in_communication(oldest, res::event("conversation", res::conversation_path(oldest), "deleted", None))];
            self.push(app_id, events);
            self.end_im(live[0], ImPhase::Ended);
        }
        id
    }

    /// Adds a message to a connected conversation and queues its `message` completed event.
    fn add_message(&mut self, id: u64, direction: &'static str, text: String) -> Option<String> {
        let c = self.im.get_mut(&id)?;
        c.messages.push(Message { direction, text: text.clone(), at_ms: now_ms() });
        let n = c.messages.len();
        let (from, to) = if direction == "Incoming" { (c.remote.clone(), c.local.clone()) } else { (c.local.clone(), c.remote.clone()) };
        let mut event = res::event("message", res::message_path(c, n), "completed", Some(res::message(c, n)));
        event["status"] = json!("Success");
        let ev = in_conversation(c, event);
        let (app, conv) = (c.app_id, res::conversation_path(c));
        self.push(app, vec![ev]);
        self.record(&from, &to, &text, conv.clone());
        Some(format!("{conv}/messaging/messages/{n}"))
    }
}

fn in_communication(c: &ImConversation, event: Value) -> SimEvent {
    SimEvent { sender_rel: "communication", sender_href: format!("{}/communication", app_path(c.app_id)), event }
}

fn in_conversation(c: &ImConversation, event: Value) -> SimEvent {
    SimEvent { sender_rel: "conversation", sender_href: res::conversation_path(c), event }
}

/// The events of a conversation becoming connected: messaging updated, conversation updated,
/// invitation completed (Success).
fn connected_events(c: &ImConversation) -> Vec<SimEvent> {
    let mut completed = res::event("messagingInvitation", res::invitation_path(c), "completed", Some(res::invitation(c)));
    completed["status"] = json!("Success");
    vec![
        in_conversation(c, res::event("messaging", res::messaging_path(c), "updated", Some(res::messaging(c)))),
        in_communication(c, res::event("conversation", res::conversation_path(c), "updated", Some(res::conversation(c)))),
        in_communication(c, completed),
    ]
}

/// `POST communication/messagingInvitations` (the application's `startMessaging`).
pub(crate) fn start(shared: &Shared, body: &Value, app_id: u64, user: &str) -> Reply {
    let field = |k: &str| member(body, k);
    let Some(to) = field("to").and_then(Value::as_str).filter(|t| t.starts_with("sip:") && t.len() <= 512) else {
        return bad("`to` must be a sip: URI.");
    };
    let first = match field("_links").and_then(|l| member(l, "message")).and_then(|m| member(m, "href")) {
        None => None,
        Some(href) => match href.as_str().and_then(data_text).filter(|t| valid_text(t)) {
            Some(t) => Some(t),
            None => return bad("_links.message.href must be data:text/plain,… with 1 to 10000 characters."),
        },
    };
    let mut st = shared.lock();
    let id = st.new_im(app_id, "Outgoing", format!("sip:{user}"), to.to_string(), first.clone());
    let c = &st.im[&id];
    let invitation = res::invitation(c);
    let mut events = vec![
        in_communication(c, res::event("conversation", res::conversation_path(c), "added", Some(res::conversation(c)))),
        in_communication(c, res::event("messagingInvitation", res::invitation_path(c), "started", Some(invitation.clone()))),
    ];
    // The other party accepts at once.
    events.extend(connected_events(c));
    let location = res::invitation_path(c);
    st.push(app_id, events);
    if let Some(text) = first {
        st.add_message(id, "Outgoing", text);
    }
    Reply::json(StatusCode::CREATED, &invitation).header(header::LOCATION, location)
}

/// `POST /sim/v1/messages {"from", "to", "text"}`: someone sends the account `to` an IM.
pub(crate) fn deliver(shared: &Shared, body: &Value) -> Reply {
    let field = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(from), Some(to), Some(text)) = (field("from"), field("to"), field("text")) else {
        return bad("expected {\"from\": \"sip:…\", \"to\": \"sip:<account>\", \"text\": \"…\"}");
    };
    if !from.starts_with("sip:") || !to.starts_with("sip:") {
        return bad("`from` and `to` must be sip: URIs.");
    }
    if !valid_text(text) {
        return bad("`text` must have 1 to 10000 characters.");
    }
    let user = to.trim_start_matches("sip:").to_ascii_lowercase();
    let mut st = shared.lock();
    if !st.users.contains_key(&user) {
        return Reply::error(StatusCode::NOT_FOUND, "NotFound", None, &format!("{to} is not an account of this simulator."));
    }
    // Already talking: the message arrives in that conversation.
    let existing = st.im.values().rev().find(|c| c.local.eq_ignore_ascii_case(to) && c.remote.eq_ignore_ascii_case(from)).map(|c| (c.id, c.phase));
    match existing {
        Some((id, ImPhase::Connected)) => {
            let message = st.add_message(id, "Incoming", text.to_string());
            let c = &st.im[&id];
            return Reply::json(
                StatusCode::CREATED,
                &json!({"conversation": res::conversation_path(c), "invitation": res::invitation_path(c), "message": message}),
            );
        }
        Some((id, _)) => {
            let c = st.im.get_mut(&id).expect("found above");
            if c.waiting.len() >= MAX_WAITING {
                return conflict("TooManyMessages", &format!("{MAX_WAITING} messages already wait for this invitation to be accepted"));
            }
            c.waiting.push(text.to_string());
            return Reply::json(
                StatusCode::ACCEPTED,
                &json!({"conversation": res::conversation_path(c), "invitation": res::invitation_path(c), "message": null}),
            );
        }
        None => {}
    }
    let Some(app_id) = st.ringing_target(Some(&user)) else {
        return conflict("MakeMeAvailableRequired", &format!("no application of {user} has called makeMeAvailable: the message cannot be delivered"));
    };
    let id = st.new_im(app_id, "Incoming", format!("sip:{user}"), from.to_string(), Some(text.to_string()));
    let c = st.im.get_mut(&id).expect("just added");
    c.waiting.push(text.to_string());
    let c = &st.im[&id];
    let events = vec![
        in_communication(c, res::event("messagingInvitation", res::invitation_path(c), "started", Some(res::invitation(c)))),
        in_communication(c, res::event("conversation", res::conversation_path(c), "added", Some(res::conversation(c)))),
    ];
    let out = json!({"conversation": res::conversation_path(c), "invitation": res::invitation_path(c), "message": null});
    st.push(app_id, events);
    Reply::json(StatusCode::ACCEPTED, &out)
}

/// `communication/messagingInvitations/<id>[/accept|/decline]`.
pub(crate) fn invitation_route(st: &mut SimState, req: &Req, app_id: u64, inv: &str, action: &[&str]) -> Option<Reply> {
    let get = req.method == axum::http::Method::GET || req.method == axum::http::Method::HEAD;
    let post = req.method == axum::http::Method::POST;
    let inv: u64 = inv.parse().ok()?;
    let c = st.im.values().find(|c| c.app_id == app_id && c.invitation_id == inv)?;
    let id = c.id;
    let ringing = c.phase == ImPhase::Invited;
    Some(match action {
        [] if get => Reply::json(StatusCode::OK, &res::invitation(c)),
        ["accept"] if post && ringing => {
            let c = st.im.get_mut(&id).expect("found above");
            c.phase = ImPhase::Connected;
            let waiting = std::mem::take(&mut c.waiting);
            let events = connected_events(c);
            st.push(app_id, events);
            for text in waiting {
                st.add_message(id, "Incoming", text);
            }
            Reply::no_content()
        }
        ["decline"] if post && ringing => {
            let mut completed = res::event("messagingInvitation", res::invitation_path(c), "completed", Some(res::invitation(c)));
            completed["status"] = json!("Failure");
            completed["reason"] = reply::error("Forbidden", Some("Declined"), "The invitation was declined.");
            let events = vec![in_communication(c, completed), in_communication(c, res::event("conversation", res::conversation_path(c), "deleted", None))];
            st.push(app_id, events);
            st.end_im(id, ImPhase::Declined);
            Reply::no_content()
        }
        ["accept" | "decline"] if post => conflict("InvalidState", "The invitation is not waiting for an answer."),
        _ => return None,
    })
}

/// `communication/conversations/<id>/…` of a messaging conversation.
pub(crate) fn conversation_route(st: &mut SimState, req: &Req, app_id: u64, id: u64, rest: &[&str]) -> Option<Reply> {
    let get = req.method == axum::http::Method::GET || req.method == axum::http::Method::HEAD;
    let post = req.method == axum::http::Method::POST;
    let c = st.im_of(app_id, id)?;
    let connected = c.phase == ImPhase::Connected;
    Some(match rest {
        [] if get => Reply::json(StatusCode::OK, &res::conversation(c)),
        ["messaging"] if get => Reply::json(StatusCode::OK, &res::messaging(c)),
        ["messaging", "messages", n] if get => match n.parse::<usize>().ok().filter(|n| (1..=c.messages.len()).contains(n)) {
            Some(n) => Reply::json(StatusCode::OK, &res::message(c, n)),
            None => return None,
        },
        ["messaging", "messages"] if post => {
            if !connected {
                return Some(conflict("InvalidState", "The conversation's messaging is not connected."));
            }
            let text = match message_body(req) {
                Ok(t) => t,
                Err(r) => return Some(r),
            };
            let href = st.add_message(id, "Outgoing", text).expect("the conversation is live");
            Reply::empty(StatusCode::CREATED).header(header::LOCATION, href)
        }
        ["messaging", "terminate"] if post => {
            if !connected {
                return Some(conflict("InvalidState", "The conversation's messaging is not connected."));
            }
            let c = st.im.get_mut(&id).expect("found above");
            c.phase = ImPhase::Ended;
            let events = vec![
                in_conversation(c, res::event("messaging", res::messaging_path(c), "updated", Some(res::messaging(c)))),
                in_communication(c, res::event("conversation", res::conversation_path(c), "deleted", None)),
            ];
            st.push(app_id, events);
            st.end_im(id, ImPhase::Ended);
            Reply::no_content()
        }
        ["participants"] if get => Reply::json(StatusCode::OK, &res::participants(c)),
        ["participants", "local"] if get => Reply::json(StatusCode::OK, &res::local_participant(c)),
        ["participants", who] if get && res::is_remote(c, who) => Reply::json(StatusCode::OK, &res::participant(c)),
        _ => return None,
    })
}

/// `sendMessage`'s body: the text, `text/plain` (or with no content type); 1 to 10000 characters.
fn message_body(req: &Req) -> Result<String, Reply> {
    let ct = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("text/plain");
    if !ct.trim().to_ascii_lowercase().starts_with("text/plain") {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            None,
            "sendMessage takes text/plain (htmlMessaging is disabled).",
        ));
    }
    match std::str::from_utf8(strip_bom(&req.body)) {
        Ok(t) if valid_text(t) => Ok(t.to_string()),
        _ => Err(bad("the message must be UTF-8 text of 1 to 10000 characters.")),
    }
}

/// The live conversations of an application (for `conversations?filter=active`).
pub(crate) fn active(st: &SimState, app_id: u64) -> Vec<Value> {
    st.im.values().filter(|c| c.app_id == app_id).map(res::conversation).collect()
}

/// The control API's record of messages.
pub(crate) fn list(shared: &Shared) -> Reply {
    let st = shared.lock();
    let all: Vec<Value> = st.messages.iter().map(|m| json!({"from": m.from, "to": m.to, "text": m.text, "conversation": m.conversation})).collect();
    Reply::json(StatusCode::OK, &Value::Array(all))
}

/// The control API's list of messaging conversations, live then ended.
pub(crate) fn list_conversations(shared: &Shared) -> Reply {
    let st = shared.lock();
    let all: Vec<Value> = st
        .im
        .values()
        .chain(st.ended_im.iter())
        .map(|c| {
            json!({"id": c.id, "application": c.app_id, "direction": c.direction, "local": c.local, "remote": c.remote,
                   "state": format!("{:?}", c.phase), "conversation": res::conversation_path(c), "invitation": res::invitation_path(c),
                   "messages": c.messages.len()})
        })
        .collect();
    Reply::json(StatusCode::OK, &Value::Array(all))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_application_keeps_at_most_keep_live_conversations() {
        let mut st = super::SimState::new(&super::super::SimConfig::default());
        let (app, _) = st.create_app("demo@contoso.com", "e", "ua", "en-US", std::time::Duration::from_secs(180), tokio::time::Instant::now());
        let first = st.new_im(app, "Outgoing", "sip:demo@contoso.com".into(), "sip:a@b.c".into(), None);
        for _ in 0..super::KEEP {
            st.new_im(app, "Outgoing", "sip:demo@contoso.com".into(), "sip:a@b.c".into(), None);
        }
        assert_eq!(st.im.len(), super::KEEP);
        assert!(st.im_of(app, first).is_none(), "the oldest ended");
        assert_eq!(st.ended_im.iter().map(|c| c.id).collect::<Vec<_>>(), [first]);
    }

    #[test]
    fn data_uris() {
        assert_eq!(super::data_text("data:text/plain;charset=utf-8,Sorry%20I%20missed%20you%21").as_deref(), Some("Sorry I missed you!"));
        assert_eq!(super::data_text("data:text/plain,hello+from+bot").as_deref(), Some("hello from bot"));
        assert_eq!(super::data_text("data:text/plain,1%2B1%3D2").as_deref(), Some("1+1=2"));
        assert_eq!(super::data_text("data:text/html,<b>x</b>"), None);
    }
}
