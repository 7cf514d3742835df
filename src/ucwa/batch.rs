//! Decoding one event-channel response (PROTOCOL.md §4, "Batch shape") into typed events.
//!
//! Each event keeps its JSON text exactly as received (`raw`, parsed only when read); the fields
//! scripts read most are pulled out once here, with hrefs made absolute against the pool origin.

use super::session::strip_bom;
use super::{link, Origin};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::OnceLock;

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
    /// `status` of a completed operation (`Success`, `Failure`).
    pub status: Option<String>,
    /// Delivery number, assigned by the journal in channel order.
    pub seq: u64,
    /// The event object exactly as received, as JSON text (journaled as it is).
    raw: Box<RawValue>,
    /// `raw` parsed, the first time something reads it.
    parsed: OnceLock<Value>,
    /// When the event was decoded (its delivery latency is measured from here).
    pub received: std::time::Instant,
}

impl Event {
    /// An event from its parts; `raw` is the event object's JSON text.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        rel: String,
        kind: String,
        href: String,
        title: Option<String>,
        sender_rel: String,
        sender_href: String,
        conversation: Option<String>,
        status: Option<String>,
        seq: u64,
        raw: Box<RawValue>,
    ) -> Event {
        Event { rel, kind, href, title, sender_rel, sender_href, conversation, status, seq, raw, parsed: OnceLock::new(), received: std::time::Instant::now() }
    }

    /// The event object as received, parsed (once).
    pub fn raw(&self) -> &Value {
        self.parsed.get_or_init(|| serde_json::from_str(self.raw.get()).unwrap_or(Value::Null))
    }

    /// The event object as received, as JSON text.
    pub fn raw_json(&self) -> &RawValue {
        &self.raw
    }

    /// The embedded resource (`_embedded.<rel>`), when the server sent one.
    pub fn resource(&self) -> Option<&Value> {
        self.raw().get("_embedded").and_then(|e| e.get(&self.rel))
    }

    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    /// The `reason` block (`{code, subcode, message}`) of a failed operation.
    pub fn reason(&self) -> Option<&Value> {
        self.raw().get("reason")
    }
}

/// A response body carrying the agent's own events (`rel = "agent"`, sender `agent`): what the
/// journal stores for them, decoded by `parse` like any batch. Each is `(type, href, detail)`;
/// `detail` becomes the event's `resource`.
pub fn synthetic_body(events: &[(&str, &str, Value)]) -> Vec<u8> {
    let href = events.first().map_or("", |e| e.1);
    let list: Vec<Value> = events
        .iter()
        .map(|(kind, href, detail)| serde_json::json!({"link": {"rel": "agent", "href": href}, "type": kind, "_embedded": {"agent": detail}}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"_links": {"next": {"href": href}}, "sender": [{"rel": "agent", "href": href, "events": list}]}))
        .expect("JSON values serialize")
}

/// The parts of a response the agent reads; events stay as raw JSON text.
#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(rename = "_links", default)]
    links: Option<Value>,
    #[serde(default, borrow)]
    sender: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireSender {
    #[serde(default)]
    rel: Option<String>,
    #[serde(default)]
    href: Option<String>,
    #[serde(default)]
    events: Option<Vec<Box<RawValue>>>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(default)]
    link: Option<WireLink>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct WireLink {
    #[serde(default)]
    rel: Option<String>,
    #[serde(default)]
    href: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// Decodes a response body; an error says what is wrong with it.
pub fn parse(body: &[u8], origin: &Origin) -> Result<Batch, String> {
    let text = std::str::from_utf8(strip_bom(body)).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let wire: WireBatch = serde_json::from_str(text).map_err(|e| format!("body is not JSON: {e}"))?;
    let links = serde_json::json!({"_links": wire.links.unwrap_or(Value::Null)});
    let continuation = if let Some(h) = link(&links, "resync") {
        Continuation::Resync(h.to_string())
    } else if let Some(h) = link(&links, "resume") {
        Continuation::Resume(h.to_string())
    } else if let Some(h) = link(&links, "next") {
        Continuation::Next(h.to_string())
    } else {
        return Err("the response has no next, resync or resume link".into());
    };
    let senders: Vec<WireSender> = match wire.sender.map(RawValue::get).map(str::trim_start) {
        None => Vec::new(),
        Some(t) if t.starts_with("null") => Vec::new(),
        Some(t) if t.starts_with('{') => vec![serde_json::from_str(t).map_err(|e| format!("`sender`: {e}"))?],
        Some(t) => serde_json::from_str(t).map_err(|e| format!("`sender` is not an array of senders: {e}"))?,
    };
    let mut events = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let sender_rel = sender.rel.unwrap_or_default();
        let sender_href = sender.href.map(|h| origin.absolute(&h)).unwrap_or_default();
        for (j, raw) in sender.events.unwrap_or_default().into_iter().enumerate() {
            let head: WireEvent = serde_json::from_str(raw.get()).map_err(|e| format!("sender[{i}].events[{j}]: {e}"))?;
            let l = head.link.ok_or_else(|| format!("sender[{i}].events[{j}] has no link"))?;
            let rel = l.rel.ok_or_else(|| format!("sender[{i}].events[{j}].link has no rel"))?;
            let kind = head.kind.ok_or_else(|| format!("sender[{i}].events[{j}] has no type"))?;
            let href = l.href.map(|h| origin.absolute(&h)).unwrap_or_default();
            let conversation = conversation_of(&href).or_else(|| (sender_rel == "conversation").then(|| sender_href.clone()));
            events.push(Event::from_parts(
                rel,
                kind,
                href,
                l.title,
                sender_rel.clone(),
                sender_href.clone(),
                conversation,
                head.status,
                0,
                raw,
            ));
        }
    }
    Ok(Batch { continuation, events })
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
