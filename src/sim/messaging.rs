//! Instant messages the account sends (`startMessaging` with its first message inline, as
//! `_links.message.href = "data:text/plain,…"`): the pool's events for the conversation
//! (conversation added, messagingInvitation started and completed, messaging updated, the
//! message completed) and a record the control API shows (`GET /sim/v1/messages`, the latest 1000).

use super::channel::SimEvent;
use super::reply::Reply;
use super::resources::app_path;
use super::server::Shared;
use axum::http::{header, StatusCode};
use serde_json::{json, Value};

/// A message an account sent.
#[derive(Debug, Clone)]
pub(crate) struct SentMessage {
    pub from: String,
    pub to: String,
    pub text: String,
}

/// `data:text/plain[;charset=utf-8],Hello%20there` → `Hello there`.
fn data_text(href: &str) -> Option<String> {
    let rest = href.strip_prefix("data:")?;
    let (kind, data) = rest.split_once(',')?;
    if !kind.to_ascii_lowercase().starts_with("text/plain") {
        return None;
    }
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={}", data.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

/// `POST communication/messagingInvitations` (the application's `startMessaging`).
pub(crate) fn start(shared: &Shared, body: &Value, app_id: u64, user: &str) -> Reply {
    let field = |k: &str| super::server::member(body, k);
    let bad = |m: &str| Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), m);
    let Some(to) = field("to").and_then(Value::as_str).filter(|t| t.starts_with("sip:")) else {
        return bad("`to` must be a sip: URI.");
    };
    let text = field("_links").and_then(|l| l.get("message")).and_then(|m| m.get("href")).and_then(Value::as_str).and_then(data_text);
    let Some(text) = text.filter(|t| !t.is_empty() && t.chars().count() <= 10_000) else {
        return bad("the first message goes in _links.message.href as data:text/plain,… (1 to 10000 characters).");
    };
    let mut st = shared.lock();
    let conv_id = st.next_id();
    let inv_id = st.next_id();
    let p = app_path(app_id);
    let c = format!("{p}/communication/conversations/{conv_id}");
    let inv = format!("{p}/communication/messagingInvitations/{inv_id}");
    let invitation = json!({
        "rel": "messagingInvitation", "direction": "Outgoing", "state": "Connected", "to": to,
        "_links": {"self": {"href": inv}, "conversation": {"href": c}, "messaging": {"href": format!("{c}/messaging")}},
    });
    let comm = |rel: &str, href: &str, kind: &str, embedded: Option<Value>| {
        let mut event = json!({"link": {"rel": rel, "href": href}, "type": kind});
        if let Some(r) = embedded {
            event["_embedded"] = json!({ rel: r });
        }
        SimEvent { sender_rel: "communication", sender_href: format!("{p}/communication"), event }
    };
    let in_conv = |rel: &str, href: String, kind: &str| SimEvent {
        sender_rel: "conversation",
        sender_href: c.clone(),
        event: json!({"link": {"rel": rel, "href": href}, "type": kind}),
    };
    let mut completed = comm("messagingInvitation", &inv, "completed", Some(invitation.clone()));
    completed.event["status"] = json!("Success");
    let mut message = in_conv("message", format!("{c}/messaging/messages/1"), "completed");
    message.event["status"] = json!("Success");
    let events = vec![
        comm("conversation", &c, "added", None),
        comm("messagingInvitation", &inv, "started", Some(invitation.clone())),
        in_conv("messaging", format!("{c}/messaging"), "updated"),
        completed,
        message,
    ];
    st.push(app_id, events);
    // The latest 1000: a script sending in a loop does not grow the simulator without bound.
    if st.messages.len() >= 1000 {
        st.messages.remove(0);
    }
    st.messages.push(SentMessage { from: format!("sip:{user}"), to: to.to_string(), text });
    Reply::json(StatusCode::CREATED, &invitation).header(header::LOCATION, inv)
}

/// The control API's record.
pub(crate) fn list(shared: &Shared) -> Reply {
    let st = shared.lock();
    let all: Vec<Value> = st.messages.iter().map(|m| json!({"from": m.from, "to": m.to, "text": m.text})).collect();
    Reply::json(StatusCode::OK, &Value::Array(all))
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_uris() {
        assert_eq!(super::data_text("data:text/plain;charset=utf-8,Sorry%20I%20missed%20you%21").as_deref(), Some("Sorry I missed you!"));
        assert_eq!(super::data_text("data:text/plain,1+1%3D2").as_deref(), Some("1+1=2"));
        assert_eq!(super::data_text("data:text/html,<b>x</b>"), None);
    }
}
