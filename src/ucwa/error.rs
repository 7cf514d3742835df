//! What can go wrong talking to a pool, classified so the caller knows what to do.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UcwaError {
    /// The request did not get an HTTP answer (connection refused or reset, timeout, TLS).
    #[error("{method} {url}: no answer: {message}")]
    Transport { method: String, url: String, message: String },
    /// The server answered with an error status (boxed: the details are large, and every
    /// `Result` of the client carries this type).
    #[error("{0}")]
    Status(Box<StatusError>),
    /// The answer is not what UCWA sends (not JSON, truncated, a link missing).
    #[error("{url}: unexpected reply: {message}")]
    Malformed { url: String, message: String },
    /// An href on another origin: the session is never sent there.
    #[error("refused to send the session to {href}: not on the pool's origin {origin}")]
    ForeignOrigin { href: String, origin: String },
    /// Sign-in cannot succeed without a change on the user's side (bad credentials, no password grant).
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// The pool refused the credentials themselves (`invalid_grant`, a bearer token rejected
    /// with no newer one): retrying cannot help, and with a password it can lock the account.
    #[error("credentials refused: {0}")]
    Credentials(String),
}

/// An error status with what the answer said: `code`/`subcode`/`message` from the UCWA error
/// body (JSON or XML), `diagnostics` from `X-Ms-Diagnostics` and `Warning`: what an admin can
/// act on. An HTML body (IIS) is never quoted.
#[derive(Debug, thiserror::Error)]
#[error(
    "{method} {url}: HTTP {status}{}{}{}{}",
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
    subcode.as_deref().map(|s| format!("/{s}")).unwrap_or_default(),
    message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
    diagnostics.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default()
)]
pub struct StatusError {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub code: Option<String>,
    pub subcode: Option<String>,
    pub message: Option<String>,
    pub diagnostics: Option<String>,
    pub retry_after: Option<Duration>,
}

impl UcwaError {
    pub fn status(&self) -> Option<u16> {
        match self {
            UcwaError::Status(e) => Some(e.status),
            _ => None,
        }
    }

    pub fn subcode(&self) -> Option<&str> {
        match self {
            UcwaError::Status(e) => e.subcode.as_deref(),
            _ => None,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UcwaError::Status(e) => e.retry_after,
            _ => None,
        }
    }

    /// The session cannot go on without signing in again (or at all).
    pub fn needs_sign_in(&self) -> bool {
        matches!(self, UcwaError::SignIn(_) | UcwaError::Credentials(_))
    }

    /// 404 ApplicationNotFound or 410 (InactiveApplicationExpired…): the application is gone.
    pub fn application_gone(&self) -> bool {
        matches!(self.status(), Some(404) | Some(410))
    }
}
