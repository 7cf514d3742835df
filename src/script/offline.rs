//! Offline answers for `agent.ucwa.*` and `agent.http.request` (the `replay` and `test`
//! commands): nothing leaves the machine; every request is recorded and reported as what the
//! script *would* send.
//!
//! `agent.ucwa.get(href)` answers a canned answer (`test.answer`, `replay --answers`), or the
//! latest resource the replayed (or dispatched) events embedded for that href (200), or 404;
//! other methods answer a canned answer or 204. HTTP requests answer a canned answer or 200 with
//! an empty body. An href is the same whether written absolute or as a path on the pool's origin.

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
    /// The pool's origin (`https://pool.replay.invalid`): a path is an href on it.
    origin: String,
    /// The application's href (a path): a canned answer's target without a leading `/` is
    /// relative to it (`me/presence`).
    application: String,
    /// The 404's message, saying where answers come from (`replay` and `test` differ).
    missing: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OfflineNet {
    pub fn new(enforce_allowlist: bool) -> OfflineNet {
        OfflineNet { enforce_allowlist, missing: "Not in the replayed events.".into(), ..OfflineNet::default() }
    }

    /// Hrefs on `origin`, the application at `application` (a path), and the 404's message.
    pub fn at(mut self, origin: &str, application: &str, missing: &str) -> OfflineNet {
        self.origin = origin.trim_end_matches('/').to_string();
        self.application = application.trim_end_matches('/').to_string();
        self.missing = missing.to_string();
        self
    }

    /// The application's href (a path).
    pub fn application(&self) -> &str {
        &self.application
    }

    /// One spelling per href: a path becomes absolute on the origin.
    fn key(&self, target: &str) -> String {
        if target.starts_with('/') && !target.starts_with("//") && !self.origin.is_empty() {
            format!("{}{target}", self.origin)
        } else {
            target.to_string()
        }
    }

    /// What a canned answer's target names: an absolute URL, a path, or (no leading `/`, no
    /// scheme) a path relative to the application (`me/presence`).
    pub fn target(&self, target: &str) -> String {
        let relative = !target.starts_with('/') && !target.contains("://") && !self.application.is_empty();
        if relative {
            self.key(&format!("{}/{target}", self.application))
        } else {
            self.key(target)
        }
    }

    /// Remembers an event's embedded resource as what its href answers.
    pub fn learn(&self, href: &str, resource: Option<&Value>, deleted: bool) {
        let mut r = lock(&self.resources);
        if deleted {
            r.remove(&self.key(href));
        } else if let Some(v) = resource {
            r.insert(self.key(href), v.clone());
        }
    }

    pub fn can(&self, method: &str, target: &str, answer: Canned) {
        lock(&self.canned).insert((method.to_ascii_uppercase(), self.target(target)), answer);
    }

    /// Records a request and gives its answer.
    pub fn answer(&self, req: Request) -> Canned {
        let href = self.key(&req.url);
        let key = (req.method.to_ascii_uppercase(), href.clone());
        let canned = lock(&self.canned).get(&key).cloned();
        let answer = canned.unwrap_or_else(|| match (req.via, req.method.as_str()) {
            ("ucwa", "GET") => match lock(&self.resources).get(&href) {
                Some(v) => Canned { status: 200, body: v.clone() },
                None => Canned { status: 404, body: serde_json::json!({"code": "NotFound", "subcode": "ResourceNotFound", "message": self.missing}) },
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
