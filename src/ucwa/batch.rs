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
use super::wire::{RawEvent, Sender, Wire, MAX_ITEMS};

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
    /// journal keeps the body as received, so they stay on record. The first
    /// `SKIPPED_TOLD` are told; `skipped_more` counts the rest (a hostile body of a hundred
    /// thousand bad events is not a hundred thousand log lines).
    pub skipped: Vec<String>,
    pub skipped_more: usize,
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
    sender: Option<OneOrMany<Counted<WireSender<'a>>>>,
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
    events: Option<Vec<Counted<&'a RawValue>>>,
}

thread_local! {
    /// How many more senders and events `decode` takes (`wire::MAX_ITEMS`, as the one-pass
    /// reader): serde builds a value for each before the batch could be counted.
    static ITEMS_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_ITEMS) };
}

/// A sender or an event, counted against `ITEMS_LEFT` before it is decoded.
struct Counted<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counted<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ITEMS_LEFT.with(|left| match left.get().checked_sub(1) {
            Some(n) => {
                left.set(n);
                Ok(())
            }
            None => Err(serde::de::Error::custom(format_args!("more than {MAX_ITEMS} senders and events in one response"))),
        })?;
        T::deserialize(d).map(Counted)
    }
}

/// How many of a batch's skipped events are told one by one (`Batch::skipped`).
pub const SKIPPED_TOLD: usize = 20;

/// Decodes a response body; an error says what is wrong with it.
pub fn parse(body: &[u8], origin: &Origin) -> Result<Batch, String> {
    parse_by(body, origin, true)
}

/// `parse`, with the one-pass reader (`wire`) first or serde alone (the tests compare them).
fn parse_by(body: &[u8], origin: &Origin, one_pass: bool) -> Result<Batch, String> {
    let bytes = strip_bom(body);
    let wire = match one_pass.then(|| super::wire::read(bytes)).flatten() {
        Some(wire) => wire,
        None => decode(std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?)?,
    };
    let continuation = if let Some(h) = wire.resync {
        Continuation::Resync(h.into_owned())
    } else if let Some(h) = wire.resume {
        Continuation::Resume(h.into_owned())
    } else if let Some(h) = wire.next {
        Continuation::Next(h.into_owned())
    } else {
        return Err("the response has no next, resync or resume link".into());
    };
    let senders = wire.senders;
    let count = senders.iter().map(|s| s.events.len()).sum::<usize>();
    // (`sender`: the lengths of its rel and href.)
    let room = |sender: usize, text: usize, href: usize| text + 2 * (origin.as_str().len() + 16) + href + sender + 64;
    // Every event of the batch packed into one buffer: one allocation per batch, not per event,
    // with room for all of them made at once (a buffer that grows copies what it holds). Each
    // event's text is in the body, and its head's strings (parts of that text) are usually
    // well under half of it; an unusual batch makes the buffer grow (a copy of what it holds).
    // Counting only per-event room, as before, the bench's batches used 82 KB of 80 KB made,
    // and every one of them grew to 160 KB.
    let needed = bytes.len()
        + bytes.len() / 2
        + senders
            .iter()
            .map(|s| s.events.len() * Packer::room(room(s.href.as_ref().map_or(0, |h| h.len()) + s.rel.as_ref().map_or(0, |r| r.len()), 0, 0)))
            .sum::<usize>();
    let mut arena = Vec::with_capacity(needed);
    let mut packed = Vec::with_capacity(count);
    let mut skipped = Vec::new();
    let mut skipped_more = 0;
    // (The message is made only for the events told.)
    let mut skip = |what: &dyn Fn() -> String| match skipped.len() < SKIPPED_TOLD {
        true => skipped.push(what()),
        false => skipped_more += 1,
    };
    let received = std::time::Instant::now();
    let mut absolute_sender = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let sender_rel = sender.rel.unwrap_or_default();
        let sender_href = sender.href.unwrap_or_default();
        let sender_len = sender_rel.len() + sender_href.len();
        // Made absolute once per sender, copied into each of its events.
        absolute_sender.clear();
        let plain_sender = (!sender_href.is_empty() && origin.absolute_into(&sender_href, &mut absolute_sender)).then_some(&*sender_href);
        for (j, raw) in sender.events.into_iter().enumerate() {
            let head = match raw.head.map_or_else(|| super::head::read(raw.text), Ok) {
                Ok(head) => head,
                Err(e) => {
                    skip(&|| format!("sender[{i}].events[{j}]: {e}"));
                    continue;
                }
            };
            let (l, kind) = match (head.link, head.kind) {
                (Some(l), Some(kind)) if l.rel.is_some() => (l, kind),
                (None, _) => {
                    skip(&|| format!("sender[{i}].events[{j}] has no link"));
                    continue;
                }
                (Some(_), None) => {
                    skip(&|| format!("sender[{i}].events[{j}] has no type"));
                    continue;
                }
                (Some(_), Some(_)) => {
                    skip(&|| format!("sender[{i}].events[{j}].link has no rel"));
                    continue;
                }
            };
            let rel = l.rel.clone().unwrap_or_default();
            let href = l.href.unwrap_or_default();
            let mut p = Packer::new(&mut arena, room(sender_len, raw.text.len(), href.len()));
            p.put(Field::Rel, &rel);
            p.put(Field::Kind, &kind);
            p.put_with(Field::Href, |b| {
                if !href.is_empty() {
                    origin.absolute_under_into(plain_sender, &href, b)
                }
            });
            if let Some(t) = &l.title {
                p.put(Field::Title, t);
            }
            p.put(Field::SenderRel, &sender_rel);
            p.put_with(Field::SenderHref, |b| b.extend_from_slice(&absolute_sender));
            // The conversation is a prefix of the href, or the sender itself: point at that text.
            let conversation = match p.bytes(Field::Href).and_then(conversation_of) {
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
            p.put(Field::Raw, raw.text);
            packed.push(p.finish());
        }
    }
    let arena = std::sync::Arc::new(arena);
    let events = packed.into_iter().map(|at| Event::in_arena(arena.clone(), at, received)).collect();
    Ok(Batch { continuation, events, skipped, skipped_more })
}

/// A response decoded by serde (the one-pass reader left it: unusual, or an error to tell).
fn decode<'a>(text: &'a str) -> Result<Wire<'a>, String> {
    ITEMS_LEFT.with(|left| left.set(MAX_ITEMS));
    let wire: WireBatch<'a> = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => format!("body is not an event batch: {e}"),
        _ => format!("body is not JSON: {e}"),
    })?;
    let links = wire.links.unwrap_or_default();
    let href = |l: Option<OneOrMany<WireHref<'a>>>| l.and_then(|l| l.0.into_iter().next()).and_then(|l| l.href);
    let senders = wire.sender.map(|s| s.0).unwrap_or_default().into_iter().map(|Counted(s)| Sender {
        rel: s.rel,
        href: s.href,
        events: s.events.unwrap_or_default().into_iter().map(|Counted(raw)| RawEvent { text: raw.get(), head: None }).collect(),
    });
    Ok(Wire { next: href(links.next), resync: href(links.resync), resume: href(links.resume), senders: senders.collect() })
}

/// The length of `…/communication/conversations/<id>` when `href` lies inside a conversation.
fn conversation_of(href: &[u8]) -> Option<usize> {
    const MARK: &[u8] = b"/communication/conversations/";
    // The searcher is built once (building it per href cost more than the search).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> = std::sync::LazyLock::new(|| memchr::memmem::Finder::new(MARK));
    let b = href;
    let start = FINDER.find(b)? + MARK.len();
    let id_len = b[start..].iter().position(|&c| c == b'/' || c == b'?').unwrap_or(b.len() - start);
    (id_len > 0).then_some(start + id_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn origin() -> Origin {
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

    /// What a decoded response shows (continuation, each event packed, what was skipped): the
    /// same for both paths, error text included.
    pub(super) type Outcome = Result<(Continuation, Vec<Vec<u8>>, Vec<String>, usize), String>;

    pub(super) fn outcome(body: &[u8], one_pass: bool) -> Outcome {
        parse_by(body, &origin(), one_pass).map(|b| (b.continuation, b.events.iter().map(|e| e.packed().to_vec()).collect(), b.skipped, b.skipped_more))
    }

    /// Whether the one-pass reader took `body` itself (else serde decoded it).
    fn taken(body: &[u8]) -> bool {
        crate::ucwa::wire::read(strip_bom(body)).is_some()
    }

    /// Every sample body of the fixtures: the documentation's event batches and resources, and
    /// the replay samples' lines.
    pub(super) fn samples() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut bodies: Vec<Vec<u8>> =
            ["events", "resources"].iter().flat_map(|d| std::fs::read_dir(dir.join(d)).unwrap()).map(|f| std::fs::read(f.unwrap().path()).unwrap()).collect();
        bodies.extend(std::fs::read(dir.join("replay/samples.jsonl")).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
        bodies
    }

    #[test]
    fn the_one_pass_reader_agrees_with_serde_on_every_sample_and_mutation() {
        let mut bodies = samples();
        // Edge cases of the grammar and of the shape, each inside an otherwise usual batch.
        let event = |e: &str| format!(r#"{{"_links":{{"next":{{"href":"/n"}}}},"sender":[{{"rel":"me","href":"/me","events":[{e}]}}]}}"#);
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let mut edges: Vec<String> = [
            r#"{"link":{"rel":"a","href":"/x"},"type":"added","n":-0.5E-3,"m":[0,1e9,-1,2.0,true,false,null,{}]}"#,
            r#"{"link":{"rel":"a\u00e9","href":"/x"},"type":"added"}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":"\ud800"}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":"\u12G4"}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":"\q"}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":"tab\there"}"#,
            "{\"link\":{\"rel\":\"a\"},\"type\":\"added\",\"x\":\"raw\ttab\"}",
            r#"{"link":{"rel":"a"},"type":"added","x":01}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":1.}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":1e+}"#,
            r#"{"link":{"rel":"a"},"type":"added","x":-}"#,
            r#"{"link":{"rel":"a"},"type":"added","type":"b"}"#,
            r#"{"link":{"rel":"a","rel":"b"},"type":"added"}"#,
            r#"{"link":{"rel":"a"},"link":{"rel":"b"},"type":"added"}"#,
            r#"{"link":null,"type":"added"}"#,
            r#"{"link":{"rel":null},"type":"added"}"#,
            r#"{"link":{"rel":"a"},"type":7}"#,
            r#"{"link":{"rel":"a"},"typ\u0065":"added"}"#,
            r#"{"link":{"rel":"a"},"type":"added",}"#,
            r#"{"link":{"rel":"a"} "type":"added"}"#,
            r#"[1,2]"#,
            r#""text""#,
            r#"{"link":{"rel":"ä","title":"Ünïcode"},"type":"added"}"#,
            " { \"link\" : { \"rel\" : \"a\" } ,\n\t\"type\" : \"added\" } ",
        ]
        .iter()
        .map(|e| event(e))
        .collect();
        for n in [98, 99, 100, 101, 127, 128, 129] {
            edges.push(event(&format!(r#"{{"link":{{"rel":"a"}},"type":"added","x":{}}}"#, deep(n))));
        }
        edges.extend(
            [
                r#"{"_links":{"next":{"href":"/n"},"next":{"href":"/m"}},"sender":[]}"#,
                r#"{"_links":{"next":[{"href":"/n"}]},"sender":[]}"#,
                r#"{"_links":{"next":{"href":"/n"}},"sender":{"rel":"me","events":[{"link":{"rel":"a"},"type":"added"}]}}"#,
                r#"{"_links":{"next":{"href":"/n"}},"sender":null}"#,
                r#"{"_links":{"next":{"href":"/n"}},"sender":[],"sender":[]}"#,
                r#"{"_links":{"next":{"href":"/n\/x"}},"sender":[]}"#,
                r#"{"_links":{"resync":{"href":"/r"},"next":{"href":"/n"}}}"#,
                r#"{"_links":{"resume":{"href":"/r"}}} x"#,
                r#"{"_links":{"next":{"href":"/n"}},"sender":[{"events":{}}]}"#,
                r#"{"_links":{"next":{"href":"/n"}},"sender":[{"events":null,"href":"rel/x"}]}"#,
                r#"{"_l\u0069nks":{"next":{"href":"/n"}}}"#,
                r#"[{"_links":{"next":{"href":"/n"}}}]"#,
            ]
            .map(String::from),
        );
        bodies.extend(edges.into_iter().map(String::into_bytes));
        // UTF-8: the one-pass reader checks it only inside strings (the rest must be ASCII).
        let with = |bytes: &[u8]| {
            [&br#"{"_links":{"next":{"href":"/n"}},"sender":[{"rel":"me","events":[{"link":{"rel":"a"},"type":"added","x":"#[..], bytes, b"}]}]}"].concat()
        };
        for bytes in [
            "\"ä €𝄞\"".as_bytes(),
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xe2\x82\"",
            b"\"\xe2\x82",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xff\"",
            b"\"a\xe2\"\x82\xac\"",
            b"1\xc2\xa0",
            b"\xef\xbb\xbf1",
            b"\"\x80\"",
        ] {
            bodies.push(with(bytes));
        }
        let (mut compared, mut taken_count) = (0, 0);
        let mut check = |body: &[u8]| {
            assert_eq!(outcome(body, true), outcome(body, false), "{}", String::from_utf8_lossy(body));
            compared += 1;
            taken_count += taken(body) as usize;
        };
        // Every body, then each cut short and each with one byte changed (a different one at
        // each place, from the characters JSON gives meaning to).
        const CHANGES: &[u8] = b"\"\\{}[],:0-e. \x01nutx\xc3";
        for body in &bodies {
            check(body);
            for at in (0..body.len()).step_by(3) {
                check(&body[..at]);
                let mut changed = body.clone();
                changed[at] = CHANGES[at % CHANGES.len()];
                check(&changed);
            }
        }
        // The reader took most bodies itself (else this compares serde with itself).
        assert!(bodies.iter().filter(|b| taken(b)).count() * 10 > bodies.len() * 8, "the one-pass reader took too few samples");
        assert!(taken_count * 10 > compared, "the reader took {taken_count} of {compared} bodies");
    }

    /// A hostile pool's body of many tiny events costs a bounded amount: past `MAX_ITEMS`
    /// senders and events it is refused (both paths, before their values are built), and of
    /// the events skipped only the first `SKIPPED_TOLD` are told.
    #[test]
    fn a_body_of_too_many_events_is_refused_and_bad_events_are_told_up_to_a_bound() {
        let events = |n: usize, one: &str| {
            let list = vec![one; n].join(",");
            format!(r#"{{"_links":{{"next":{{"href":"/n"}}}},"sender":[{{"rel":"me","events":[{list}]}}]}}"#).into_bytes()
        };
        let senders = |n: usize| {
            let list = vec![r#"{"events":[]}"#; n].join(",");
            format!(r#"{{"_links":{{"next":{{"href":"/n"}}}},"sender":[{list}]}}"#).into_bytes()
        };
        for (body, what) in [(events(MAX_ITEMS, "1"), "events"), (senders(MAX_ITEMS + 1), "senders")] {
            for one_pass in [true, false] {
                let e = parse_by(&body, &origin(), one_pass).unwrap_err();
                assert!(e.contains("more than 100000 senders and events in one response"), "{what}: {e}");
            }
        }
        // Just within the bound: taken, its bad events told up to the bound and counted.
        let b = parse_by(&events(MAX_ITEMS - 1, "1"), &origin(), true).unwrap();
        assert_eq!((b.events.len(), b.skipped.len(), b.skipped_more), (0, SKIPPED_TOLD, MAX_ITEMS - 1 - SKIPPED_TOLD));
        assert_eq!(b.skipped[0], "sender[0].events[0]: invalid type: integer `1`, expected struct Head at line 1 column 1");
        let good = r#"{"link":{"rel":"a","href":"/a"},"type":"added"}"#;
        assert_eq!(parse_by(&events(1000, good), &origin(), true).unwrap().events.len(), 1000);
        // The next body decodes with the whole bound again.
        assert_eq!(parse_by(&events(MAX_ITEMS - 1, good), &origin(), false).unwrap().events.len(), MAX_ITEMS - 1);
    }
}

#[cfg(test)]
#[path = "batch_fuzz.rs"]
mod fuzz;
