//! HTTP to the pool with the agent's token. The token goes only to the pool origin; it is
//! renewed before it expires and on any 401, and the failed request is retried once.

use super::{Origin, Secret, UcwaError};
use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// How the agent proves who it is.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

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
        serde_json::from_slice(strip_bom(&self.body))
            .map_err(|e| UcwaError::Malformed { url: url.to_string(), message: format!("body is not JSON: {e}") })
    }
}

pub(crate) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

#[derive(Debug)]
struct Token {
    value: Secret,
    /// Renew at this point: a minute before `expires_in` runs out.
    renew_at: Instant,
}

/// A signed-in session with one pool.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    origin: Origin,
    /// The MsRtcOAuth token endpoint (on the pool origin).
    token_url: Url,
    credentials: Credentials,
    /// The current token; the mutex also makes renewal single-flight.
    token: Mutex<Option<Token>>,
}

impl Session {
    /// A session for `origin`; no request is sent until the first call.
    pub fn new(http: reqwest::Client, origin: Origin, token_url: Url, credentials: Credentials) -> Result<Session, UcwaError> {
        if !origin.same_origin(&token_url) {
            return Err(UcwaError::SignIn(format!(
                "the token endpoint {token_url} is not on the pool's origin {}; the password is not sent there",
                origin.as_str()
            )));
        }
        Ok(Session { http, origin, token_url, credentials, token: Mutex::new(None) })
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
    pub async fn send(
        &self,
        method: Method,
        href: &str,
        body: Option<(String, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<HttpReply, UcwaError> {
        let url = self.origin.resolve(href)?;
        let token = self.current_token(None).await?;
        let reply = self.exchange(&method, &url, body.clone(), timeout, &token).await?;
        if reply.status != 401 {
            return Ok(reply);
        }
        tracing::info!(href = %url.path(), "token rejected (401); signing in again");
        let token = self.current_token(Some(&token)).await?;
        self.exchange(&method, &url, body, timeout, &token).await
    }

    /// `send`, turning any status other than 2xx into `UcwaError::Status`.
    pub async fn send_ok(
        &self,
        method: Method,
        href: &str,
        body: Option<(String, Bytes)>,
        timeout: Option<Duration>,
    ) -> Result<HttpReply, UcwaError> {
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
        let usable = slot.as_ref().filter(|t| Instant::now() < t.renew_at && Some(&t.value) != rejected);
        if let Some(t) = usable {
            return Ok(t.value.clone());
        }
        let fresh = self.grant().await?;
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    /// The MsRtcOAuth password grant (PROTOCOL.md §2).
    async fn grant(&self) -> Result<Token, UcwaError> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("username", &self.credentials.username)
            .append_pair("password", self.credentials.password.expose())
            .finish();
        let url = self.token_url.as_str().to_string();
        let resp = self
            .http
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded;charset=UTF-8")
            .header(ACCEPT, "application/json")
            .body(form)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| transport("POST", &url, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| transport("POST", &url, e))?;
        let reply = HttpReply { status, headers, body };
        if status == 400 {
            let error = reply.json(&url).ok().and_then(|v| v.get("error")?.as_str().map(str::to_string));
            return Err(match error.as_deref() {
                Some("invalid_grant") => UcwaError::SignIn(format!(
                    "the pool refused the user name or password for {} (invalid_grant)",
                    self.credentials.username
                )),
                Some(other) => UcwaError::SignIn(format!("the token endpoint answered `{other}`")),
                None => status_error(&Method::POST, &url, &reply),
            });
        }
        if !(200..300).contains(&status) {
            return Err(status_error(&Method::POST, &url, &reply));
        }
        let v = reply.json(&url)?;
        let token = v.get("access_token").and_then(Value::as_str).ok_or_else(|| UcwaError::Malformed {
            url: url.clone(),
            message: "the token answer has no access_token".into(),
        })?;
        let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        let margin = (expires_in / 10).min(60);
        tracing::info!(user = %self.credentials.username, expires_in, "got a token");
        Ok(Token { value: Secret::new(token), renew_at: Instant::now() + Duration::from_secs(expires_in - margin) })
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
        let body = resp.bytes().await.map_err(|e| transport(method.as_str(), url.as_str(), e))?;
        Ok(HttpReply { status, headers, body })
    }
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
    let body: Option<Value> = serde_json::from_slice(strip_bom(&reply.body)).ok();
    let field = |k: &str| body.as_ref().and_then(|b| b.get(k)).and_then(Value::as_str).map(str::to_string);
    let retry_after = reply
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    UcwaError::Status {
        method: method.to_string(),
        url: url.to_string(),
        status: reply.status,
        code: field("code"),
        subcode: field("subcode"),
        retry_after,
    }
}

/// The HTTP client every pool request goes through: rustls (ring) with the Mozilla roots,
/// gzip, no automatic redirects (UCWA answers redirects as links, and a redirect must never
/// carry the token elsewhere).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ucwa-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .build()
        .expect("the TLS backend initialises")
}
