//! The console's admin token (`metrics.admin_token_env`), carried in the `X-Admin-Token`
//! header of a POST. A header, not a cookie: a page of another site cannot make the browser
//! send it (no cross-site request forgery), and without the token, or with no token
//! configured, every action answers 403.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The header that carries the token.
pub(super) const HEADER: &str = "x-admin-token";

/// The configured token, kept as its SHA-256 (compared in constant time).
pub(crate) struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// From `metrics.admin_token_env`; a token that cannot serve (unset, too short) is logged
    /// and the console stays read-only (`run` does not start with one; a reload may bring one).
    pub(crate) fn from_env(var: Option<&str>) -> AdminToken {
        let Some(var) = var else { return AdminToken(None) };
        match crate::config::admin_token(var) {
            Ok(token) => AdminToken(Some(digest(&token))),
            Err(why) => {
                tracing::error!("metrics.admin_token_env: {why}; the console stays read-only");
                AdminToken(None)
            }
        }
    }

    pub(super) fn configured(&self) -> bool {
        self.0.is_some()
    }

    /// Ok when the request carries the token; else the 403 to answer.
    #[allow(clippy::result_large_err)]
    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(want) = &self.0 else {
            return Err(forbidden("the console is read-only: no admin token is configured (metrics.admin_token_env)"));
        };
        let given = headers.get(HEADER).and_then(|v| v.to_str().ok()).map(|t| digest(t.trim()));
        // Both are 32-byte digests: the comparison takes as long whatever they hold.
        let same = given.is_some_and(|g| g.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
        if same {
            Ok(())
        } else {
            tracing::warn!("console: an action without the right admin token was refused");
            Err(forbidden("this action needs the admin token in the X-Admin-Token header"))
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(super) fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({"error": why}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(HEADER, t.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_configured_token_passes() {
        let admin = AdminToken(Some(digest("s3cret-token-0123456789")));
        assert!(admin.check(&with(Some("s3cret-token-0123456789"))).is_ok());
        for wrong in [None, Some(""), Some("s3cret-token-012345678"), Some("s3cret-token-0123456789x")] {
            assert_eq!(admin.check(&with(wrong)).unwrap_err().status(), StatusCode::FORBIDDEN, "{wrong:?}");
        }
        let none = AdminToken(None);
        assert!(!none.configured());
        assert_eq!(none.check(&with(Some("anything"))).unwrap_err().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_short_or_missing_token_leaves_the_console_read_only() {
        let var = "UCWA_AGENT_ADMIN_UNIT_TEST_TOKEN";
        std::env::set_var(var, "short");
        assert!(!AdminToken::from_env(Some(var)).configured());
        assert!(crate::config::admin_token(var).unwrap_err().contains("shorter than 16"));
        std::env::remove_var(var);
        assert!(crate::config::admin_token(var).unwrap_err().contains("is not set"));
        std::env::set_var(var, "a-token-long-enough-1234\n");
        assert_eq!(crate::config::admin_token(var).unwrap(), "a-token-long-enough-1234");
        assert!(AdminToken::from_env(Some(var)).configured());
    }
}
