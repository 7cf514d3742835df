//! Offline answers for `agent.ucwa.*` and `agent.http.request` (the `replay` and `test`
//! commands): nothing leaves the machine; every request is recorded and reported as what the
//! script *would* send.
//!
//! `agent.ucwa.get(href)` answers the latest resource the replayed events embedded for that
//! href (200), or a canned answer a test set, or 404; other methods answer 204. HTTP requests
//! answer a canned answer or 200 with an empty body.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// A request a script made while offline.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub script: String,
    /// `ucwa` or `http`.
    pub via: &'static str,
    pub method: String,
    pub url: String,
    pub body: Option<String>,
}

/// A canned answer: status and body.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub body: Value,
}

#[derive(Default)]
pub struct OfflineNet {
    /// href → the latest resource an event embedded for it.
    resources: Mutex<HashMap<String, Value>>,
    /// (method, href or url) → answer; set by tests.
    canned: Mutex<HashMap<(String, String), Canned>>,
    requests: Mutex<Vec<Request>>,
    /// Whether `scripts.http_allow` applies (replay with a configuration: yes; unit tests: no).
    pub enforce_allowlist: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OfflineNet {
    pub fn new(enforce_allowlist: bool) -> OfflineNet {
        OfflineNet { enforce_allowlist, ..OfflineNet::default() }
    }

    /// Remembers an event's embedded resource as what its href answers.
    pub fn learn(&self, href: &str, resource: Option<&Value>, deleted: bool) {
        let mut r = lock(&self.resources);
        if deleted {
            r.remove(href);
        } else if let Some(v) = resource {
            r.insert(href.to_string(), v.clone());
        }
    }

    pub fn can(&self, method: &str, target: &str, answer: Canned) {
        lock(&self.canned).insert((method.to_ascii_uppercase(), target.to_string()), answer);
    }

    /// Records a request and gives its answer.
    pub fn answer(&self, req: Request) -> Canned {
        let key = (req.method.to_ascii_uppercase(), req.url.clone());
        let canned = lock(&self.canned).get(&key).cloned();
        let answer = canned.unwrap_or_else(|| match (req.via, req.method.as_str()) {
            ("ucwa", "GET") => match lock(&self.resources).get(&req.url) {
                Some(v) => Canned { status: 200, body: v.clone() },
                None => Canned {
                    status: 404,
                    body: serde_json::json!({"code": "NotFound", "subcode": "ResourceNotFound", "message": "Not in the replayed events."}),
                },
            },
            ("ucwa", _) => Canned { status: 204, body: Value::Null },
            _ => Canned { status: 200, body: Value::String(String::new()) },
        });
        lock(&self.requests).push(req);
        answer
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    /// The requests since the last call, in order.
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut *lock(&self.requests))
    }
}
