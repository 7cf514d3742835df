//! Decoding one event-channel response (PROTOCOL.md §4, "Batch shape") into typed events.
//!
//! Each event keeps its JSON exactly as received (`raw`); the fields scripts read most are
//! pulled out once here, with hrefs made absolute against the pool origin.

use super::session::strip_bom;
use super::{link, Origin};
use serde_json::Value;

/// How the channel goes on after this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// Follow `next` (acknowledges this batch).
    Next(String),
    /// The server lost our place: follow `resync`; events may have been missed.
    Resync(String),
    /// The server cleaned up after a long gap: follow `resume`; transient state is stale.
    Resume(String),
}

/// One decoded response.
#[derive(Debug)]
pub struct Batch {
    pub continuation: Continuation,
    pub events: Vec<Event>,
}

/// One event, as scripts see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `link.rel` (`audioVideoSession`, `conversation`, …), or `agent` for the agent's own events.
    pub rel: String,
    /// `type`: added, updated, deleted, started, completed (or the agent's signedIn, resync, …).
    pub kind: String,
    /// `link.href`, absolute.
    pub href: String,
    pub title: Option<String>,
    pub sender_rel: String,
    /// The sender's href, absolute.
    pub sender_href: String,
    /// The enclosing conversation's href, when the event belongs to one.
    pub conversation: Option<String>,
    /// Delivery number, assigned by the dispatcher in channel order.
    pub seq: u64,
    /// The event object exactly as received.
    pub raw: Value,
}

impl Event {
    /// The embedded resource (`_embedded.<rel>`), when the server sent one.
    pub fn resource(&self) -> Option<&Value> {
        self.raw.get("_embedded").and_then(|e| e.get(&self.rel))
    }

    pub fn status(&self) -> Option<&str> {
        self.raw.get("status").and_then(Value::as_str)
    }

    /// The `reason` block (`{code, subcode, message}`) of a failed operation.
    pub fn reason(&self) -> Option<&Value> {
        self.raw.get("reason")
    }

    /// An event the agent itself produces (`rel = "agent"`): signedIn, signedOut, resync.
    /// `detail` is its `resource` (e.g. `{reason = "resume"}`).
    pub fn synthetic(kind: &str, href: &str, detail: Value) -> Event {
        Event {
            rel: "agent".into(),
            kind: kind.into(),
            href: href.into(),
            title: None,
            sender_rel: "agent".into(),
            sender_href: href.into(),
            conversation: None,
            seq: 0,
            raw: serde_json::json!({"link": {"rel": "agent", "href": href}, "type": kind, "_embedded": {"agent": detail}}),
        }
    }
}

/// Decodes a response body; an error says what is wrong with it.
pub fn parse(body: &[u8], origin: &Origin) -> Result<Batch, String> {
    let v: Value = serde_json::from_slice(strip_bom(body)).map_err(|e| format!("body is not JSON: {e}"))?;
    let continuation = if let Some(h) = link(&v, "resync") {
        Continuation::Resync(h.to_string())
    } else if let Some(h) = link(&v, "resume") {
        Continuation::Resume(h.to_string())
    } else if let Some(h) = link(&v, "next") {
        Continuation::Next(h.to_string())
    } else {
        return Err("the response has no next, resync or resume link".into());
    };
    let Value::Object(mut top) = v else { unreachable!("a value with _links is an object") };
    let senders = match top.remove("sender") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(s)) => s,
        Some(Value::Object(one)) => vec![Value::Object(one)],
        Some(other) => return Err(format!("`sender` is not an array: {other}")),
    };
    let mut events = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let Value::Object(mut sender) = sender else { return Err(format!("sender[{i}] is not an object")) };
        let sender_rel = str_field(&sender, "rel").unwrap_or_default();
        let sender_href = str_field(&sender, "href").map(|h| origin.absolute(&h)).unwrap_or_default();
        let list = match sender.remove("events") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(format!("sender[{i}].events is not an array")),
        };
        for (j, raw) in list.into_iter().enumerate() {
            let l = raw.get("link").ok_or_else(|| format!("sender[{i}].events[{j}] has no link"))?;
            let rel = l.get("rel").and_then(Value::as_str).ok_or_else(|| format!("sender[{i}].events[{j}].link has no rel"))?;
            let href = l.get("href").and_then(Value::as_str).map(|h| origin.absolute(h)).unwrap_or_default();
            let kind = raw.get("type").and_then(Value::as_str).ok_or_else(|| format!("sender[{i}].events[{j}] has no type"))?;
            let title = l.get("title").and_then(Value::as_str).map(str::to_string);
            let conversation = conversation_of(&href).or_else(|| (sender_rel == "conversation").then(|| sender_href.clone()));
            events.push(Event {
                rel: rel.to_string(),
                kind: kind.to_string(),
                title,
                conversation,
                href,
                sender_rel: sender_rel.clone(),
                sender_href: sender_href.clone(),
                seq: 0,
                raw,
            });
        }
    }
    Ok(Batch { continuation, events })
}

fn str_field(o: &serde_json::Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_string)
}

/// `…/communication/conversations/<id>` when `href` lies inside a conversation.
fn conversation_of(href: &str) -> Option<String> {
    const MARK: &str = "/communication/conversations/";
    let start = href.find(MARK)? + MARK.len();
    let id_len = href[start..].find(['/', '?']).unwrap_or(href.len() - start);
    (id_len > 0).then(|| href[..start + id_len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap())
    }

    #[test]
    fn seed_sample_decodes() {
        let body = include_bytes!("../../tests/fixtures/events/audioVideoSession-added.json");
        let b = parse(body, &origin()).unwrap();
        assert_eq!(b.continuation, Continuation::Next("http://sample:80/ucwa/v1/applications/appId/events?ack=2".into()));
        assert_eq!(b.events.len(), 1);
        let e = &b.events[0];
        assert_eq!((e.rel.as_str(), e.kind.as_str(), e.sender_rel.as_str()), ("audioVideoSession", "added", "communication"));
        assert_eq!(e.conversation.as_deref(), Some("https://fe1.contoso.com/ucwa/v1/applications/192/communication/conversations/137"));
        assert!(e.resource().is_none());
    }

    #[test]
    fn multi_sender_order_and_relative_hrefs() {
        let body = include_bytes!("../../tests/fixtures/resources/events-response-next.json");
        let b = parse(body, &origin()).unwrap();
        let rels: Vec<&str> = b.events.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["communication", "me", "presence", "note", "location"]);
        assert_eq!(b.events[1].href, "https://pool.contoso.com/ucwa/oauth/v1/applications/102/me");
        assert_eq!(b.events[0].resource().unwrap()["supportedModalities"][0], "Messaging");
    }

    #[test]
    fn resync_wins_and_bad_bodies_say_why() {
        let b = parse(br#"{"_links":{"self":{"href":"/e?ack=9"},"resync":{"href":"/e?ack=3"}}}"#, &origin()).unwrap();
        assert_eq!(b.continuation, Continuation::Resync("/e?ack=3".into()));
        assert!(b.events.is_empty());
        let bom = b"\xEF\xBB\xBF{\"_links\":{\"next\":{\"href\":\"/e?ack=2\"}},\"sender\":[]}";
        assert!(parse(bom, &origin()).unwrap().events.is_empty());
        assert!(parse(b"{\"_links\": {\"self\"", &origin()).unwrap_err().contains("not JSON"));
        assert!(parse(b"{\"_links\":{}}", &origin()).unwrap_err().contains("no next"));
    }
}
