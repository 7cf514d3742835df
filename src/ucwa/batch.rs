//! Decoding one event-channel response (PROTOCOL.md §4, "Batch shape") into typed events.
//!
//! Each event keeps its JSON text exactly as received (`raw`, parsed only when read); the fields
//! scripts read most are pulled out once here, with hrefs made absolute against the pool origin.

use super::session::strip_bom;
use super::Origin;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

use super::event::Packer;
pub use super::event::{packed_field, Event, Field};

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
    /// Events that could not be decoded (no `link`, `rel` or `type`, not an object), each as
    /// where it was and what is wrong: skipped, so one bad event costs only itself. The
    /// journal keeps the body as received, so they stay on record.
    pub skipped: Vec<String>,
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

/// The parts of a response the agent reads, decoded in one pass over the body; strings are
/// borrowed from it where they have no escapes, and events stay as raw JSON text.
#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(rename = "_links", default, borrow)]
    links: Option<WireLinks<'a>>,
    #[serde(default, borrow)]
    sender: Option<OneOrMany<WireSender<'a>>>,
}

#[derive(Deserialize, Default)]
struct WireLinks<'a> {
    #[serde(default, borrow)]
    next: Option<OneOrMany<WireHref<'a>>>,
    #[serde(default, borrow)]
    resync: Option<OneOrMany<WireHref<'a>>>,
    #[serde(default, borrow)]
    resume: Option<OneOrMany<WireHref<'a>>>,
}

#[derive(Deserialize)]
struct WireHref<'a> {
    #[serde(default, borrow)]
    href: Option<Cow<'a, str>>,
}

/// One object or an array of them: `sender` comes both ways, and so may a `_links` value (of
/// which the first counts, PROTOCOL.md §3).
struct OneOrMany<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object or an array of objects")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|t| OneOrMany(vec![t]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(t) = seq.next_element()? {
                    all.push(t);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct WireSender<'a> {
    #[serde(default, borrow)]
    rel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    href: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    events: Option<Vec<&'a RawValue>>,
}

/// Decodes a response body; an error says what is wrong with it.
pub fn parse(body: &[u8], origin: &Origin) -> Result<Batch, String> {
    let text = std::str::from_utf8(strip_bom(body)).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let wire: WireBatch = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("body is not an event batch: {e}"),
        _ => format!("body is not JSON: {e}"),
    })?;
    let links = wire.links.unwrap_or_default();
    let href = |l: Option<OneOrMany<WireHref>>| l.and_then(|l| l.0.into_iter().next()).and_then(|l| l.href).map(Cow::into_owned);
    let continuation = if let Some(h) = href(links.resync) {
        Continuation::Resync(h)
    } else if let Some(h) = href(links.resume) {
        Continuation::Resume(h)
    } else if let Some(h) = href(links.next) {
        Continuation::Next(h)
    } else {
        return Err("the response has no next, resync or resume link".into());
    };
    let senders = wire.sender.map(|s| s.0).unwrap_or_default();
    let count = senders.iter().map(|s| s.events.as_ref().map_or(0, Vec::len)).sum::<usize>();
    // Every event of the batch packed into one buffer: one allocation per batch, not per event.
    let mut arena = Vec::with_capacity(text.len() + count * (3 * origin.as_str().len() + 200));
    let mut packed = Vec::with_capacity(count);
    let mut skipped = Vec::new();
    let received = std::time::Instant::now();
    let mut absolute_sender = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let sender_rel = sender.rel.unwrap_or_default();
        let sender_href = sender.href.unwrap_or_default();
        // Made absolute once per sender, copied into each of its events.
        absolute_sender.clear();
        if !sender_href.is_empty() {
            origin.absolute_into(&sender_href, &mut absolute_sender);
        }
        for (j, raw) in sender.events.unwrap_or_default().into_iter().enumerate() {
            let head = match super::head::read(raw.get()) {
                Ok(head) => head,
                Err(e) => {
                    skipped.push(format!("sender[{i}].events[{j}]: {e}"));
                    continue;
                }
            };
            let (l, kind) = match (head.link, head.kind) {
                (Some(l), Some(kind)) if l.rel.is_some() => (l, kind),
                (None, _) => {
                    skipped.push(format!("sender[{i}].events[{j}] has no link"));
                    continue;
                }
                (Some(_), None) => {
                    skipped.push(format!("sender[{i}].events[{j}] has no type"));
                    continue;
                }
                (Some(_), Some(_)) => {
                    skipped.push(format!("sender[{i}].events[{j}].link has no rel"));
                    continue;
                }
            };
            let rel = l.rel.clone().unwrap_or_default();
            let href = l.href.unwrap_or_default();
            let text = raw.get().len() + 2 * (origin.as_str().len() + 16) + href.len() + sender_href.len() + sender_rel.len() + 64;
            let mut p = Packer::new(&mut arena, text);
            p.put(Field::Rel, &rel);
            p.put(Field::Kind, &kind);
            p.put_with(Field::Href, |b| {
                if !href.is_empty() {
                    origin.absolute_into(&href, b)
                }
            });
            if let Some(t) = &l.title {
                p.put(Field::Title, t);
            }
            p.put(Field::SenderRel, &sender_rel);
            p.put_with(Field::SenderHref, |b| b.extend_from_slice(&absolute_sender));
            // The conversation is a prefix of the href, or the sender itself: point at that text.
            let conversation = match p.field(Field::Href).and_then(conversation_of) {
                Some(len) => p.span(Field::Href).map(|(start, _)| (start, len)),
                None if sender_rel == "conversation" => p.span(Field::SenderHref),
                None => None,
            };
            if let Some((start, len)) = conversation {
                p.point(Field::Conversation, start, len);
            }
            if let Some(s) = &head.status {
                p.put(Field::Status, s);
            }
            p.put(Field::Raw, raw.get());
            packed.push(p.finish());
        }
    }
    let arena = std::sync::Arc::new(arena);
    let events = packed.into_iter().map(|at| Event::in_arena(arena.clone(), at, received)).collect();
    Ok(Batch { continuation, events, skipped })
}

/// The length of `…/communication/conversations/<id>` when `href` lies inside a conversation.
fn conversation_of(href: &str) -> Option<usize> {
    const MARK: &[u8] = b"/communication/conversations/";
    let b = href.as_bytes();
    // Looking only where a `/` is: cheaper than a substring search set up per href.
    let at = (0..b.len()).find(|&i| b[i] == b'/' && b[i..].starts_with(MARK))?;
    let start = at + MARK.len();
    let id_len = b[start..].iter().position(|&c| c == b'/' || c == b'?').unwrap_or(b.len() - start);
    (id_len > 0).then_some(start + id_len)
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
        assert_eq!((e.rel(), e.kind(), e.sender_rel()), ("audioVideoSession", "added", "communication"));
        assert_eq!(e.conversation(), Some("https://fe1.contoso.com/ucwa/v1/applications/192/communication/conversations/137"));
        assert!(e.resource().is_none());
    }

    #[test]
    fn multi_sender_order_and_relative_hrefs() {
        let body = include_bytes!("../../tests/fixtures/resources/events-response-next.json");
        let b = parse(body, &origin()).unwrap();
        let rels: Vec<&str> = b.events.iter().map(|e| e.rel()).collect();
        assert_eq!(rels, ["communication", "me", "presence", "note", "location"]);
        assert_eq!(b.events[1].href(), "https://pool.contoso.com/ucwa/oauth/v1/applications/102/me");
        assert_eq!(b.events[0].resource().unwrap()["supportedModalities"][0], "Messaging");
    }

    #[test]
    fn a_single_sender_object_and_link_arrays_decode() {
        let body = br#"{"_links":{"next":[{"href":"/e?ack=5"},{"href":"/other"}]},
            "sender":{"rel":"conversation","href":"/ucwa/oauth/v1/applications/1/communication/conversations/9",
              "events":[{"link":{"rel":"participant","href":"/ucwa/oauth/v1/applications/1/people/x"},"type":"added"}]}}"#;
        let b = parse(body, &origin()).unwrap();
        assert_eq!(b.continuation, Continuation::Next("/e?ack=5".into()));
        let e = &b.events[0];
        assert_eq!((e.rel(), e.sender_rel()), ("participant", "conversation"));
        assert_eq!(e.conversation(), Some("https://pool.contoso.com/ucwa/oauth/v1/applications/1/communication/conversations/9"), "the sending conversation");
        let none = parse(br#"{"_links":{"next":{"href":"/e?ack=2"}},"sender":null}"#, &origin()).unwrap();
        assert!(none.events.is_empty());
        let one_bad = parse(br#"{"_links":{"next":{"href":"/e?ack=2"}},"sender":[{"events":[{"type":"added"}]}]}"#, &origin()).unwrap();
        assert!(one_bad.events.is_empty());
        assert_eq!(one_bad.skipped, ["sender[0].events[0] has no link"]);
        let err = parse(br#"{"_links":{"next":{"href":"/e?ack=2"}},"sender":7}"#, &origin()).unwrap_err();
        assert!(err.contains("not an event batch"), "{err}");
    }

    #[test]
    fn one_bad_event_costs_only_itself() {
        let body = br#"{"_links":{"next":{"href":"/e?ack=3"}},"sender":[
            {"rel":"communication","href":"/c","events":[
              {"link":{"rel":"audioVideoSession","href":"/a/1"},"type":"added"},
              {"link":{"rel":"audioVideoSession","href":"/a/2"}},
              {"link":{"href":"/a/3"},"type":"added"},
              7,
              {"link":{"rel":"audioVideoSession","href":"/a/4"},"type":"deleted"}]},
            {"rel":"me","href":"/me","events":[{"type":"updated"},{"link":{"rel":"presence","href":"/p"},"type":"updated"}]}]}"#;
        let b = parse(body, &origin()).unwrap();
        let got: Vec<(&str, &str)> = b.events.iter().map(|e| (e.rel(), e.href())).collect();
        assert_eq!(
            got,
            [
                ("audioVideoSession", "https://pool.contoso.com/a/1"),
                ("audioVideoSession", "https://pool.contoso.com/a/4"),
                ("presence", "https://pool.contoso.com/p")
            ]
        );
        assert_eq!(b.skipped.len(), 4, "{:?}", b.skipped);
        assert_eq!(b.skipped[0], "sender[0].events[1] has no type");
        assert_eq!(b.skipped[1], "sender[0].events[2].link has no rel");
        assert!(b.skipped[2].starts_with("sender[0].events[3]: "), "{}", b.skipped[2]);
        assert_eq!(b.skipped[3], "sender[1].events[0] has no link");
        assert_eq!(b.continuation, Continuation::Next("/e?ack=3".into()), "the channel moves on");
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
