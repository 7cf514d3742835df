//! Responses as a pool sends them: `Content-Length` (never chunked), `application/json;
//! charset=utf-8`, gzip when the client accepts it.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use std::io::Write;

pub(crate) const JSON: &str = "application/json; charset=utf-8";

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, value: &Value) -> Reply {
        Reply::json_bytes(status, Bytes::from(serde_json::to_vec(value).expect("JSON values serialize")))
    }

    pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Reply {
        Reply { status, content_type: Some(JSON), headers: Vec::new(), body }
    }

    pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: &'static [u8]) -> Reply {
        Reply { status, content_type: Some(content_type), headers: Vec::new(), body: Bytes::from_static(body) }
    }

    /// A status without a body (`201` of `sendMessage`, with its `Location`).
    pub(crate) fn empty(status: StatusCode) -> Reply {
        Reply { status, content_type: None, headers: Vec::new(), body: Bytes::new() }
    }

    pub(crate) fn no_content() -> Reply {
        Reply { status: StatusCode::NO_CONTENT, content_type: None, headers: Vec::new(), body: Bytes::new() }
    }

    /// What IIS answers in front of UCWA for a 401: an HTML page.
    pub(crate) fn html(status: StatusCode, text: &'static str) -> Reply {
        Reply { status, content_type: Some("text/html"), headers: Vec::new(), body: Bytes::from_static(text.as_bytes()) }
    }

    /// The UCWA error body `{code, subcode, message}`.
    pub(crate) fn error(status: StatusCode, code: &str, subcode: Option<&str>, message: &str) -> Reply {
        Reply::json(status, &error(code, subcode, message))
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Builds the response; `gzip` when the request's `Accept-Encoding` allows it. A HEAD
    /// request gets the headers of the GET with no body.
    pub(crate) fn into_response(self, gzip: bool, head: bool) -> Response {
        // As IIS dynamic compression does: every non-empty JSON body, however small.
        let compress = gzip && !self.body.is_empty() && self.content_type == Some(JSON);
        let body = if compress { gzip_bytes(&self.body) } else { self.body };
        let mut builder = Response::builder().status(self.status);
        if let Some(ct) = self.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        if compress {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
        }
        builder = builder.header(header::CONTENT_LENGTH, body.len());
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                builder = builder.header(name, v);
            }
        }
        let body = if head { Body::empty() } else { Body::from(body) };
        builder.body(body).expect("valid response parts")
    }
}

/// A 200 that promises a JSON body, sends its first bytes, then drops the connection.
pub(crate) fn dropped_connection() -> Response {
    let partial = Bytes::from_static(b"{\"_links\":{\"self\":{\"href\":");
    let stream = futures_util::stream::iter(vec![
        Ok::<Bytes, std::io::Error>(partial),
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "simulated connection drop")),
    ]);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, JSON)
        .header(header::CONTENT_LENGTH, 4096)
        .body(Body::from_stream(stream))
        .expect("valid response parts")
}

/// A 200 that starts like a batch and never ends: about 1 GiB of padding in 1 MiB chunks, sent
/// chunked (no `Content-Length`); with `gzip`, compressed as it goes (about 1 MiB on the wire).
/// Each chunk is made only when the client reads on, so a client that stops costs nothing.
pub(crate) fn endless_body(next_href: String, gzip: bool) -> Response {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let head = Bytes::from(format!("{{\"_links\":{{\"next\":{{\"href\":\"{next_href}\"}}}},\"sender\":[],\"padding\":\""));
    let pad = Bytes::from(vec![b'x'; CHUNK]);
    let plain = futures_util::stream::iter(std::iter::once(head).chain(std::iter::repeat_n(pad, CHUNKS)));
    let mut builder = Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, JSON);
    let body = if gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        Body::from_stream(futures_util::StreamExt::map(plain, move |chunk| {
            enc.write_all(&chunk)?;
            enc.flush()?;
            Ok::<Bytes, std::io::Error>(Bytes::from(std::mem::take(enc.get_mut())))
        }))
    } else {
        Body::from_stream(futures_util::StreamExt::map(plain, Ok::<Bytes, std::io::Error>))
    };
    builder.body(body).expect("valid response parts")
}

fn gzip_bytes(data: &[u8]) -> Bytes {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4 + 64), Compression::fast());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    Bytes::from(enc.finish().expect("writing to a Vec cannot fail"))
}

/// The error body shape of PROTOCOL.md §6.
pub(crate) fn error(code: &str, subcode: Option<&str>, message: &str) -> Value {
    let mut v = json!({"code": code, "message": message});
    if let Some(s) = subcode {
        v["subcode"] = json!(s);
    }
    v
}
