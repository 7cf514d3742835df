//! What every route and flow of the simulator shares: the state behind its lock, the request
//! as the routes see it, what a route answers, and the small readers of a request's body.

use super::config::SimConfig;
use super::reply::Reply;
use super::state::{Counters, SimState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// What every request handler and call task shares.
pub(crate) struct Shared {
    pub state: Mutex<SimState>,
    pub config: SimConfig,
    pub counters: Counters,
    /// `http://127.0.0.1:<port>`: absolute hrefs (discovery, user, token endpoint) start here.
    pub origin: String,
}

impl Shared {
    /// The state, even after a panic while it was held: a bug in one request must not leave
    /// the simulator answering nothing (every step leaves the state consistent between lines).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The parts of a request the routes look at.
pub(crate) struct Req {
    pub method: Method,
    /// Lower-cased path segments.
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// What a route produces: a normal reply, or a response built by hand (a dropped connection).
pub(crate) enum Answer {
    Reply(Reply),
    Raw(Response),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Reply(r)
    }
}

/// A request's JSON body (`Null` if it is none).
pub(crate) fn json_body(req: &Req) -> Value {
    serde_json::from_slice(strip_bom(&req.body)).unwrap_or(Value::Null)
}

/// A member of a JSON body, its key in any case, as a pool takes keys (PROTOCOL.md).
pub(crate) fn member<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    body.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// 404 NotFound / ResourceNotFound, a pool's answer for any path it does not serve.
pub(crate) fn not_found() -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "NotFound", Some("ResourceNotFound"), "The requested resource was not found.")
}

/// A body without its UTF-8 byte-order mark, which some clients send.
pub(crate) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}
