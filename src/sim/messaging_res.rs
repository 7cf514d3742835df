//! The JSON of a messaging conversation, in the shapes of the "Receive an IM" and "Send an IM"
//! samples (`messagingInvitation`, `conversation`, `messaging`, `message`, participants).

use super::model::{ImConversation, ImPhase};
use super::paths::{app_path, display_name};
use serde_json::{json, Value};

pub(crate) fn conversation_path(c: &ImConversation) -> String {
    format!("{}/communication/conversations/{}", app_path(c.app_id), c.id)
}

pub(crate) fn invitation_path(c: &ImConversation) -> String {
    format!("{}/communication/messagingInvitations/{}", app_path(c.app_id), c.invitation_id)
}

pub(crate) fn messaging_path(c: &ImConversation) -> String {
    format!("{}/messaging", conversation_path(c))
}

pub(crate) fn message_path(c: &ImConversation, n: usize) -> String {
    format!("{}/messaging/messages/{n}", conversation_path(c))
}

fn bare(uri: &str) -> &str {
    uri.trim_start_matches("sip:")
}

fn remote_path(c: &ImConversation) -> String {
    format!("{}/participants/{}", conversation_path(c), bare(&c.remote))
}

fn person_path(c: &ImConversation, uri: &str) -> String {
    format!("{}/people/{}", app_path(c.app_id), bare(uri))
}

/// Whether `who` (a path segment, lower-cased) names the remote participant, plainly or as
/// the `opaque_participant_ids` quirk spells it.
pub(crate) fn is_remote(c: &ImConversation, who: &str) -> bool {
    bare(&c.remote).eq_ignore_ascii_case(who) || super::quirks::opaque_id(&c.remote) == who
}

/// An event object: `link`, `type`, and the resource embedded under its rel.
pub(crate) fn event(rel: &str, href: String, kind: &str, embedded: Option<Value>) -> Value {
    let mut e = json!({"link": {"rel": rel, "href": href}, "type": kind});
    if let Some(r) = embedded {
        e["_embedded"] = json!({ rel: r });
    }
    e
}

/// `data:text/plain;charset=utf-8,Hi+Tosh%0D%0A`: form encoding, as the samples have it.
pub(crate) fn data_uri(text: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    format!("data:text/plain;charset=utf-8,{encoded}")
}

pub(crate) fn invitation(c: &ImConversation) -> Value {
    let inv = invitation_path(c);
    let conv = conversation_path(c);
    let state = match c.phase {
        ImPhase::Invited => "Connecting",
        ImPhase::Connected | ImPhase::Ended => "Connected",
        ImPhase::Declined => "Declined",
    };
    let mut links = json!({
        "self": {"href": inv},
        "conversation": {"href": conv},
        "messaging": {"href": messaging_path(c)},
        "to": {"href": person_path(c, if c.direction == "Incoming" { &c.local } else { &c.remote })},
    });
    if let Some(first) = &c.first {
        links["message"] = json!({"href": data_uri(first)});
    }
    if c.phase == ImPhase::Invited {
        links["accept"] = json!({"href": format!("{inv}/accept")});
        links["decline"] = json!({"href": format!("{inv}/decline")});
    }
    let from = if c.direction == "Incoming" { participant(c) } else { local_participant(c) };
    json!({
        "rel": "messagingInvitation",
        "direction": c.direction,
        "importance": "Normal",
        "threadId": c.thread_id,
        "state": state,
        "subject": "",
        "to": if c.direction == "Incoming" { &c.local } else { &c.remote },
        "_links": links,
        "_embedded": {"from": from},
    })
}

pub(crate) fn conversation(c: &ImConversation) -> Value {
    let conv = conversation_path(c);
    let state = match (c.phase, c.direction) {
        (ImPhase::Invited, _) => "Incoming",
        (ImPhase::Connected, _) => "Connected",
        _ => "Disconnected",
    };
    let modalities: Vec<&str> = if c.phase == ImPhase::Connected { vec!["Messaging"] } else { vec![] };
    json!({
        "rel": "conversation",
        "state": state,
        "threadId": c.thread_id,
        "subject": "",
        "activeModalities": modalities,
        "importance": "Normal",
        "recording": false,
        "participantCount": 2,
        "_links": {
            "self": {"href": conv},
            "messaging": {"href": messaging_path(c)},
            "participants": {"href": format!("{conv}/participants")},
            "localParticipant": {"href": format!("{conv}/participants/local"), "title": display_name(bare(&c.local))},
        },
    })
}

pub(crate) fn messaging(c: &ImConversation) -> Value {
    let m = messaging_path(c);
    let mut links = json!({"self": {"href": m}, "conversation": {"href": conversation_path(c)}});
    let state = match c.phase {
        ImPhase::Invited => "Notified",
        ImPhase::Connected => {
            links["sendMessage"] = json!({"href": format!("{m}/messages")});
            links["stopMessaging"] = json!({"href": format!("{m}/terminate")});
            "Connected"
        }
        _ => "Disconnected",
    };
    json!({"rel": "messaging", "state": state, "negotiatedMessageFormats": ["Plain"], "_links": links})
}

/// `message` n (from 1): `_links.plainMessage` carries the text as a data: URI.
pub(crate) fn message(c: &ImConversation, n: usize) -> Value {
    let m = &c.messages[n - 1];
    let mut links = json!({
        "self": {"href": message_path(c, n)},
        "messaging": {"href": messaging_path(c)},
        "plainMessage": {"href": data_uri(&m.text)},
    });
    if m.direction == "Incoming" {
        links["contact"] = json!({"href": person_path(c, &c.remote)});
        links["participant"] = json!({"href": remote_path(c), "title": display_name(bare(&c.remote))});
    }
    json!({"rel": "message", "direction": m.direction, "timeStamp": format!("/Date({})/", m.at_ms), "_links": links})
}

pub(crate) fn participants(c: &ImConversation) -> Value {
    json!({
        "rel": "participants",
        "_links": {"self": {"href": format!("{}/participants", conversation_path(c))}},
        "_embedded": {"participant": [participant(c), local_participant(c)]},
    })
}

/// The other party.
pub(crate) fn participant(c: &ImConversation) -> Value {
    json!({
        "rel": "participant", "name": display_name(bare(&c.remote)), "uri": c.remote, "local": false, "anonymous": false,
        "sourceNetwork": "SameEnterprise",
        "_links": {
            "self": {"href": remote_path(c)},
            "conversation": {"href": conversation_path(c)},
            "contact": {"href": person_path(c, &c.remote)},
        },
    })
}

/// The account itself.
pub(crate) fn local_participant(c: &ImConversation) -> Value {
    let conv = conversation_path(c);
    json!({
        "rel": "localParticipant", "name": display_name(bare(&c.local)), "uri": c.local, "local": true, "anonymous": false,
        "sourceNetwork": "SameEnterprise",
        "_links": {
            "self": {"href": format!("{conv}/participants/local")},
            "conversation": {"href": conv},
            "me": {"href": format!("{}/me", app_path(c.app_id))},
        },
    })
}
