//! HTTP to the pool with the agent's token. The token goes only to the pool origin; it is
//! renewed before it expires and on any 401 (or 403 `InvalidToken`), and the failed request is retried once.

use super::auth::Auth;
use super::{Origin, Secret, UcwaError};
use crate::metrics::Metrics;
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpReply {
    /// The body as JSON (a leading UTF-8 byte-order mark is allowed, PROTOCOL.md §6).
    pub fn json(&self, url: &str) -> Result<Value, UcwaError> {
        serde_json::from_slice(strip_bom(&self.body)).map_err(|e| UcwaError::Malformed { url: url.to_string(), message: format!("body is not JSON: {e}") })
    }
}

pub(crate) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

#[derive(Debug)]
struct Token {
    value: Secret,
    /// Renew at this point: shortly before `expires_in` runs out (never, for bearer tokens).
    renew_at: Option<Instant>,
    /// A token file's modification time when it was read: a change means a new token.
    stamp: Option<std::time::SystemTime>,
}

/// A signed-in session with one pool.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    origin: Origin,
    /// The MsRtcOAuth token endpoint (on the pool origin), for the password grant.
    token_url: Option<Url>,
    auth: Auth,
    /// The current token; the mutex also makes renewal single-flight.
    token: Mutex<Option<Token>>,
    /// Where token renewals are counted.
    metrics: Option<Arc<Metrics>>,
}

impl Session {
    /// A session for `origin`; no request is sent until the first call.
    pub fn new(http: reqwest::Client, origin: Origin, token_url: Option<Url>, auth: Auth) -> Result<Session, UcwaError> {
        match (&auth, &token_url) {
            (Auth::Password { .. }, None) => return Err(UcwaError::SignIn("the password grant needs the pool's token endpoint".into())),
            (Auth::Password { .. }, Some(url)) if !origin.same_origin(url) => {
                return Err(UcwaError::SignIn(format!(
                    "the token endpoint {url} is not on the pool's origin {}; the password is not sent there",
                    origin.as_str()
                )))
            }
            _ => {}
        }
        Ok(Session { http, origin, token_url, auth, token: Mutex::new(None), metrics: None })
    }

    /// Counts token renewals in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Session {
        self.metrics = metrics;
        self
    }

    /// The same account on another origin (Online: the user resource and the pool differ).
    pub fn for_origin(&self, origin: Origin) -> Result<Session, UcwaError> {
        Ok(Session::new(self.http.clone(), origin, self.token_url.clone(), self.auth.clone())?.with_metrics(self.metrics.clone()))
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Gets a token now (the password grant), replacing any current one.
    pub async fn sign_in(&self) -> Result<(), UcwaError> {
        let mut slot = self.token.lock().await;
        *slot = Some(self.grant().await?);
        Ok(())
    }

    /// Sends a request to the pool; `timeout` bounds the whole exchange (default 60 s).
    pub async fn send(&self, method: Method, href: &str, body: Option<(String, Bytes)>, timeout: Option<Duration>) -> Result<HttpReply, UcwaError> {
        let url = self.origin.resolve(href)?;
        let token = self.current_token(None).await?;
        let reply = self.exchange(&method, &url, body.clone(), timeout, &token).await?;
        if !token_rejected(&reply) {
            return Ok(reply);
        }
        tracing::info!(href = %url.path(), status = reply.status, "token rejected; signing in again");
        let token = self.current_token(Some(&token)).await?;
        self.exchange(&method, &url, body, timeout, &token).await
    }

    /// `send`, turning any status other than 2xx into `UcwaError::Status`.
    pub async fn send_ok(&self, method: Method, href: &str, body: Option<(String, Bytes)>, timeout: Option<Duration>) -> Result<HttpReply, UcwaError> {
        let reply = self.send(method.clone(), href, body, timeout).await?;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(status_error(&method, &self.origin.absolute(href), &reply))
        }
    }

    pub async fn get_json(&self, href: &str) -> Result<Value, UcwaError> {
        let reply = self.send_ok(Method::GET, href, None, None).await?;
        reply.json(href)
    }

    pub async fn post_json(&self, href: &str, body: &Value) -> Result<HttpReply, UcwaError> {
        let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON values serialize"));
        self.send_ok(Method::POST, href, Some(("application/json".to_string(), bytes)), None).await
    }

    /// The token to use; renews it if there is none, it is due, or it is `rejected`.
    async fn current_token(&self, rejected: Option<&Secret>) -> Result<Secret, UcwaError> {
        let mut slot = self.token.lock().await;
        let usable = slot.as_ref().filter(|t| t.renew_at.is_none_or(|at| Instant::now() < at) && Some(&t.value) != rejected && !self.source_changed(t));
        if let Some(t) = usable {
            return Ok(t.value.clone());
        }
        let fresh = self.grant().await?;
        if rejected == Some(&fresh.value) {
            return Err(match &self.auth {
                Auth::Bearer { source, .. } => {
                    UcwaError::Credentials(format!("the pool rejected the bearer token from {}, and it has no newer one", source.describe()))
                }
                Auth::Password { .. } => UcwaError::SignIn("the pool rejected a token it has just issued".into()),
            });
        }
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    /// Whether a token file changed since the token was read from it.
    fn source_changed(&self, t: &Token) -> bool {
        match &self.auth {
            Auth::Bearer { source, .. } => t.stamp.is_some() && source.stamp() != t.stamp,
            Auth::Password { .. } => false,
        }
    }

    /// A new token: the password grant, or the bearer token's source read again.
    async fn grant(&self) -> Result<Token, UcwaError> {
        let token = self.grant_once().await?;
        if let Some(m) = &self.metrics {
            m.token_renewal();
        }
        Ok(token)
    }

    async fn grant_once(&self) -> Result<Token, UcwaError> {
        let (username, password) = match &self.auth {
            Auth::Password { username, password } => (username, password),
            Auth::Bearer { source, .. } => {
                let stamp = source.stamp();
                let value = source.fetch().await?;
                tracing::info!(source = %source.describe(), "read a bearer token");
                return Ok(Token { value, renew_at: None, stamp });
            }
        };
        let token_url = self.token_url.clone().expect("checked by Session::new");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("username", username)
            .append_pair("password", password.expose())
            .finish();
        let url = token_url.as_str().to_string();
        let resp = self
            .http
            .post(token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded;charset=UTF-8")
            .header(ACCEPT, "application/json")
            .body(form)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| transport("POST", &url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, "POST", &url).await?;
        let reply = HttpReply { status, headers, body };
        if status == 400 {
            let error = reply.json(&url).ok().and_then(|v| v.get("error")?.as_str().map(str::to_string));
            return Err(match error.as_deref() {
                Some("invalid_grant") => UcwaError::Credentials(format!("the pool refused the user name or password for {username} (invalid_grant)")),
                Some(other) => UcwaError::SignIn(format!("the token endpoint answered `{other}`")),
                None => status_error(&Method::POST, &url, &reply),
            });
        }
        if !(200..300).contains(&status) {
            return Err(status_error(&Method::POST, &url, &reply));
        }
        let v = reply.json(&url)?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| UcwaError::Malformed { url: url.clone(), message: "the token answer has no access_token".into() })?;
        let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        // Renew a tenth of the lifetime early (at least 1 s, at most a minute).
        let margin = (expires_in / 10).clamp(1, 60).min(expires_in);
        tracing::info!(user = %username, expires_in, "got a token");
        Ok(Token { value: Secret::new(token), renew_at: Some(Instant::now() + Duration::from_secs(expires_in - margin)), stamp: None })
    }

    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        body: Option<(String, Bytes)>,
        timeout: Option<Duration>,
        token: &Secret,
    ) -> Result<HttpReply, UcwaError> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(ACCEPT, "application/json")
            .timeout(timeout.unwrap_or(Duration::from_secs(60)));
        if let Some((content_type, bytes)) = body {
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|e| transport(method.as_str(), url.as_str(), e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, method.as_str(), url.as_str()).await?;
        Ok(HttpReply { status, headers, body })
    }
}

/// The most the agent reads of any answer from the pool, counted after gzip is undone: a
/// body past it (a gzip bomb, an endless chunked body) is an error, not an allocation.
/// 32 MiB is about 60,000 events in one batch; real batches are a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Reads a body chunk by chunk, stopping with an error once it passes [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body(mut resp: reqwest::Response, method: &str, url: &str) -> Result<Bytes, UcwaError> {
    let too_large = || UcwaError::Malformed {
        url: url.to_string(),
        message: format!("the answer is larger than {} MiB (the most the agent reads); not read further", MAX_RESPONSE_BYTES >> 20),
    };
    if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(method, url, e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A transport failure, described without the request (which holds the token).
pub(crate) fn transport(method: &str, url: &str, e: reqwest::Error) -> UcwaError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the body"
    } else {
        "request failed"
    };
    let mut message = kind.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    UcwaError::Transport { method: method.to_string(), url: url.to_string(), message }
}

/// An error status with the UCWA error body's code and subcode, and `Retry-After`.
pub(crate) fn status_error(method: &Method, url: &str, reply: &HttpReply) -> UcwaError {
    let body = strip_bom(&reply.body);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let text = std::str::from_utf8(body).unwrap_or("");
    let xml = json.is_none() && text.trim_start().starts_with("<") && !looks_like_html(text);
    let field = |k: &str| -> Option<String> {
        let v = match &json {
            Some(b) => b.get(k).and_then(Value::as_str).map(str::to_string),
            None if xml => xml_element(text, k),
            None => None,
        };
        v.map(|s| one_line(&s, 300)).filter(|s| !s.is_empty())
    };
    let retry_after = reply.headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs);
    let header = |name: &str| -> Vec<String> { reply.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(|v| one_line(v, 300)).collect() };
    let mut diagnostics: Vec<String> = header("x-ms-diagnostics").into_iter().map(|d| format!("X-Ms-Diagnostics: {d}")).collect();
    diagnostics.extend(header("warning").into_iter().map(|w| format!("Warning: {w}")));
    UcwaError::Status(Box::new(super::error::StatusError {
        method: method.to_string(),
        url: without_key(url),
        status: reply.status,
        code: field("code"),
        subcode: field("subcode"),
        message: field("message"),
        diagnostics: (!diagnostics.is_empty()).then(|| diagnostics.join("; ")),
        retry_after,
    }))
}

/// 401, or the 403 some pools send for an expired token (`Warning: … "InvalidToken"`).
fn token_rejected(reply: &HttpReply) -> bool {
    reply.status == 401
        || (reply.status == 403 && reply.headers.get_all(reqwest::header::WARNING).iter().any(|w| w.to_str().is_ok_and(|w| w.contains("InvalidToken"))))
}

/// A URL for a log line: a `key=` query parameter (the events href's capability some pools
/// add) is not shown.
fn without_key(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query.split('&').map(|p| if p.starts_with("key=") { "key=[redacted]" } else { p }).collect();
    format!("{base}?{}", kept.join("&"))
}

/// An IIS or proxy error page: never parsed for fields, never quoted.
fn looks_like_html(text: &str) -> bool {
    let head = text.trim_start().get(..64).unwrap_or(text.trim_start()).to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html") || head.contains("<head") || head.contains("<body")
}

/// The text of the first `<name>…</name>` (any namespace prefix) in a small XML error body.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let tag_end = rest.find('>')?;
        let tag = rest[..tag_end].split_whitespace().next().unwrap_or("");
        let local = tag.rsplit(':').next().unwrap_or(tag);
        if local == name && !rest[..tag_end].ends_with('/') {
            let inner = &rest[tag_end + 1..];
            let close = inner.find("</")?;
            return Some(inner[..close].trim().to_string());
        }
    }
    None
}

/// A header or body field as one bounded log line.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match flat.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// Idle connections kept to a pool: every account of an agent shares the client, and each
/// account's own long poll holds a connection of its own; without a bound, 1,000 accounts kept
/// about 650 more idle (each with hyper's buffers and a file), 10 KiB and 0.6 open files per
/// account (BENCHMARKS.md, "An idle account's Lua state"). Eight serve the pool's other
/// requests, which are short.
const MAX_IDLE_CONNECTIONS: usize = 8;

/// The HTTP client every pool request goes through: rustls (ring) with the Mozilla roots plus
/// any extra CA certificates given as PEM, TLS always verified, gzip, no automatic redirects
/// (UCWA answers redirects as links, and a redirect must never carry the token elsewhere).
pub fn http_client(extra_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ucwa-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS);
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err("no certificate in the file".into());
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| format!("cannot set up TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> HttpReply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        HttpReply { status, headers: h, body: bytes::Bytes::from(body.to_string()) }
    }

    #[test]
    fn a_failed_request_says_what_an_admin_can_act_on() {
        let json = reply(409, &[], r#"{"code":"Conflict","subcode":"PGetReplaced","message":"A newer pending GET replaced this one."}"#);
        let e = status_error(&Method::GET, "https://pool/x", &json).to_string();
        assert_eq!(e, "GET https://pool/x: HTTP 409 Conflict/PGetReplaced: A newer pending GET replaced this one.");
        let xml = reply(
            403,
            &[],
            r#"<?xml version="1.0"?><error xmlns="http://schemas.microsoft.com/rtc/2012/03/ucwa"><code>Forbidden</code><subcode>InvalidToken</subcode><message>The token is not valid.</message></error>"#,
        );
        let e = status_error(&Method::GET, "https://pool/x", &xml).to_string();
        assert!(e.ends_with("HTTP 403 Forbidden/InvalidToken: The token is not valid."), "{e}");
        let iis = reply(
            500,
            &[("x-ms-diagnostics", "28032; reason=\"The front end server is unavailable\""), ("warning", "120 \"InvalidToken\"")],
            "<!DOCTYPE html><html><head><title>500</title></head><body><code>x</code></body></html>",
        );
        let e = status_error(&Method::POST, "https://pool/y", &iis).to_string();
        assert_eq!(e, "POST https://pool/y: HTTP 500 [X-Ms-Diagnostics: 28032; reason=\"The front end server is unavailable\"; Warning: 120 \"InvalidToken\"]");
        assert!(token_rejected(&reply(403, &[("warning", "120 \"InvalidToken\"")], "")) && !token_rejected(&reply(403, &[], "")));
        let e = status_error(&Method::GET, "https://pool/a/events?ack=4&key=abc123&timeout=180", &reply(503, &[], "")).to_string();
        assert_eq!(e, "GET https://pool/a/events?ack=4&key=[redacted]&timeout=180: HTTP 503");
    }
}
