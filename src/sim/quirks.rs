//! What real pools send that the documentation's samples do not (captured traffic, 2016–2019),
//! each a switch: `[simulator] quirks = [...]`, `simulate --quirk NAME`, `PUT /sim/v1/quirks`.
//!
//! Shapes are applied to every JSON body the pool side answers (resources and event batches) in
//! one place, after the reply is built, so the documented shapes stay the code's own; the
//! behaviours (a 403 for an expired token, XML discovery, IIS error pages, no `me`) are applied
//! where the request is answered.

use super::reply::Reply;
use axum::http::{HeaderName, StatusCode};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Quirk {
    /// The application resource embeds no `me` (SfB Online, 2016): it is only at `<application>/me`.
    NoEmbeddedMe,
    /// No `me` at all: not embedded, and `<application>/me` answers 404.
    NoMe,
    /// `_embedded` members inside resources come as arrays of one (`from`, `me`, …).
    EmbeddedArrays,
    /// Participant hrefs are opaque ids (lower-case base64 of the SIP URI, then `0`).
    OpaqueParticipantIds,
    /// Every link carries a `"revision"` member.
    LinkRevisions,
    /// The events href carries `&key=…`, its `&` written `\u0026`.
    EventsKey,
    /// Dates (`created`) in the .NET form `"\/Date(1463047458421)\/"` instead of ISO 8601.
    DotnetDates,
    /// 5xx answers are IIS HTML pages with `X-Ms-Diagnostics: 28032; reason="…"`.
    IisErrors,
    /// An expired or unknown token gets 403 with `Warning: 120 "InvalidToken"` and two
    /// `WWW-Authenticate` headers instead of 401.
    #[serde(rename = "invalid_token_403")]
    #[value(name = "invalid_token_403")]
    InvalidToken403,
    /// Autodiscover answers XML unless the request's `Accept` asks for JSON.
    XmlAutodiscover,
}

pub type Quirks = BTreeSet<Quirk>;

/// The key the `events_key` quirk adds to events hrefs.
const EVENTS_KEY: &str = "8a8f1c2e-5d7b-4c0a-9e3f-2b6d4f1a7c90";

/// Reshapes a pool reply for the quirks that are on (the control API's are left alone).
pub(crate) fn reshape(reply: Reply, q: &Quirks) -> Reply {
    if q.contains(&Quirk::IisErrors) && reply.status.is_server_error() {
        return iis_error(reply.status);
    }
    if reply.content_type != Some(super::reply::JSON) || reply.body.is_empty() {
        return reply;
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&reply.body) else {
        return reply;
    };
    shape(&mut v, q);
    let mut text = serde_json::to_string(&v).expect("JSON values serialize");
    if q.contains(&Quirk::EventsKey) {
        text = text.replace('&', "\\u0026");
    }
    if q.contains(&Quirk::DotnetDates) {
        text = text.replace("\"/Date(", "\"\\/Date(").replace(")/\"", ")\\/\"");
    }
    Reply { body: Bytes::from(text), ..reply }
}

fn shape(v: &mut Value, q: &Quirks) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| shape(i, q)),
        Value::Object(o) => {
            if o.get("rel").and_then(Value::as_str) == Some("application") && (q.contains(&Quirk::NoEmbeddedMe) || q.contains(&Quirk::NoMe)) {
                if let Some(Value::Object(e)) = o.get_mut("_embedded") {
                    e.remove("me");
                }
            }
            if q.contains(&Quirk::DotnetDates) {
                if let Some(ms) = o.get("created").and_then(Value::as_str).and_then(crate::date::parse_ms) {
                    o.insert("created".into(), Value::String(format!("/Date({ms})/")));
                }
            }
            if q.contains(&Quirk::LinkRevisions) {
                if let Some(Value::Object(links)) = o.get_mut("_links") {
                    links.values_mut().for_each(add_revision);
                }
                if let Some(link) = o.get_mut("link") {
                    add_revision(link);
                }
            }
            // An event (`link` + `type`) keeps `_embedded` as one object: the event's own
            // resource. Inside resources, members become arrays of one.
            let event = o.contains_key("link") && o.contains_key("type");
            o.values_mut().for_each(|m| shape(m, q));
            if q.contains(&Quirk::EmbeddedArrays) && !event {
                if let Some(Value::Object(e)) = o.get_mut("_embedded") {
                    for m in e.values_mut() {
                        if m.is_object() {
                            *m = Value::Array(vec![m.take()]);
                        }
                    }
                }
            }
        }
        Value::String(s) => {
            if q.contains(&Quirk::OpaqueParticipantIds) {
                if let Some(opaque) = opaque_participant(s) {
                    *s = opaque;
                }
            }
            if q.contains(&Quirk::EventsKey) && s.contains("/events?ack=") && !s.contains("key=") {
                s.push_str("&key=");
                s.push_str(EVENTS_KEY);
            }
        }
        _ => {}
    }
}

fn add_revision(link: &mut Value) {
    match link {
        Value::Object(l) => {
            l.insert("revision".into(), Value::String("2".into()));
        }
        Value::Array(items) => items.iter_mut().for_each(add_revision),
        _ => {}
    }
}

/// The opaque participant id of a SIP URI (`opaque_participant_ids`): lower-case base64, then `0`.
pub(crate) fn opaque_id(uri: &str) -> String {
    let uri = if uri.starts_with("sip:") { uri.to_ascii_lowercase() } else { format!("sip:{}", uri.to_ascii_lowercase()) };
    format!("{}0", base64(uri.as_bytes()).to_ascii_lowercase())
}

/// `…/participants/alice@contoso.com[/…]` → `…/participants/<base64("sip:alice@contoso.com")>0[/…]`.
fn opaque_participant(href: &str) -> Option<String> {
    const MARK: &str = "/participants/";
    let at = href.find(MARK)? + MARK.len();
    let end = href[at..].find(['/', '?']).map_or(href.len(), |i| at + i);
    let id = &href[at..end];
    if !id.contains('@') {
        return None;
    }
    Some(format!("{}{}{}", &href[..at], opaque_id(id), &href[end..]))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What IIS in front of a failing pool answers: an HTML page, the reason in a header.
fn iis_error(status: StatusCode) -> Reply {
    let page = "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\"><html><head><title>500 - Internal server error.</title></head>\
                <body><div id=\"header\"><h1>Server Error</h1></div><div id=\"content\"><fieldset><h2>500 - Internal server error.</h2>\
                <h3>There is a problem with the resource you are looking for, and it cannot be displayed.</h3></fieldset></div></body></html>";
    Reply::html(status, page)
        .header(HeaderName::from_static("x-ms-diagnostics"), "28032; reason=\"The front end server is unavailable\"; source=\"pool.contoso.com\"")
}

/// The discovery document in the XML form Autodiscover answers without a JSON `Accept`.
pub(crate) fn xml_discovery(doc: &Value) -> Reply {
    let mut links = String::new();
    if let Some(Value::Object(l)) = doc.get("_links") {
        for (rel, link) in l {
            if let Some(href) = link.get("href").and_then(Value::as_str) {
                links.push_str(&format!("<Link token=\"{rel}\" href=\"{href}\"/>"));
            }
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><AutodiscoverResponse xmlns=\"http://schemas.microsoft.com/rtc/2012/03/ucwa\" AccessLocation=\"Internal\"><Root>{links}</Root></AutodiscoverResponse>"
    );
    Reply { status: StatusCode::OK, content_type: Some("application/vnd.microsoft.rtc.autodiscover+xml; v=1"), headers: Vec::new(), body: Bytes::from(body) }
}

/// The control API's view.
pub(crate) fn names(q: &Quirks) -> Value {
    Value::Array(q.iter().map(|k| serde_json::to_value(k).expect("a quirk serializes")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on(q: &[Quirk]) -> Quirks {
        q.iter().copied().collect()
    }

    #[test]
    fn shapes() {
        let mut app = json!({"rel": "application", "_links": {"self": {"href": "/a"}}, "_embedded": {"me": {"_links": {}}, "people": {"rel": "people"}}});
        shape(&mut app, &on(&[Quirk::NoEmbeddedMe, Quirk::EmbeddedArrays, Quirk::LinkRevisions]));
        assert_eq!(app["_embedded"].get("me"), None);
        assert!(app["_embedded"]["people"].is_array());
        assert_eq!(app["_links"]["self"]["revision"], "2");

        let mut event = json!({"link": {"rel": "audioVideoInvitation", "href": "/i"}, "type": "started",
            "_embedded": {"audioVideoInvitation": {"_embedded": {"from": {"uri": "sip:a@b.c"}}}}});
        shape(&mut event, &on(&[Quirk::EmbeddedArrays]));
        assert!(event["_embedded"]["audioVideoInvitation"].is_object(), "the event's own resource stays an object");
        assert_eq!(event["_embedded"]["audioVideoInvitation"]["_embedded"]["from"][0]["uri"], "sip:a@b.c");

        assert_eq!(opaque_participant("/c/9/participants/Alice@Contoso.com/x").as_deref(), Some("/c/9/participants/c2lwomfsawnlqgnvbnrvc28uy29t0/x"));
        assert_eq!(opaque_participant("/c/9/participants/local"), None);
        assert_eq!(base64(b"sip:alice@contoso.com"), "c2lwOmFsaWNlQGNvbnRvc28uY29t");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn text_forms() {
        let body = serde_json::to_vec(&json!({"_links": {"next": {"href": "/a/events?ack=2"}}, "created": "2016-09-26T23:20:24.822Z"})).unwrap();
        let r = reshape(Reply::json_bytes(StatusCode::OK, Bytes::from(body)), &on(&[Quirk::EventsKey, Quirk::DotnetDates]));
        let text = std::str::from_utf8(&r.body).unwrap();
        assert!(text.contains("/a/events?ack=2\\u0026key="), "{text}");
        assert!(text.contains("\"created\":\"\\/Date(1474932024822)\\/\""), "{text}");
        let back: Value = serde_json::from_str(text).unwrap();
        assert!(back["_links"]["next"]["href"].as_str().unwrap().contains("&key="));
    }
}
