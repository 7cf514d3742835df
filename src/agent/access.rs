//! Who may read the agent's HTTP listener: HTTP basic auth against bcrypt hashes
//! (`metrics.basic_auth_users`), shared by `/metrics`, `/healthz`, the traces API and the console.

use crate::config::MetricsConfig;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::Arc;

/// HTTP basic auth against bcrypt hashes, as the Prometheus exporters' web configuration does.
/// A bcrypt check costs tens of milliseconds by design, so credentials that passed once are
/// remembered (by their SHA-256) and the next scrape is not slowed.
pub(crate) struct Access {
    users: BTreeMap<String, String>,
    passed: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
    /// bcrypt checks running at once (two: the rest answer 401 at once).
    verifying: Arc<tokio::sync::Semaphore>,
    /// A hash of the users' cost, checked for an unknown user so that both take as long.
    decoy: String,
    /// Trusted only because it listens on loopback (no users): a page of another site the
    /// operator opens could still reach it by DNS rebinding (its own name made to resolve to
    /// 127.0.0.1), so only requests whose `Host` names this host directly are served.
    loopback_only: bool,
}

impl Access {
    pub(crate) fn new(web: &MetricsConfig) -> Access {
        let cost = web.basic_auth_users.values().find_map(|h| h.parse::<bcrypt::HashParts>().ok()).map_or(bcrypt::DEFAULT_COST, |p| p.get_cost());
        let decoy = if web.basic_auth_users.is_empty() { String::new() } else { bcrypt::hash("not a user of this agent", cost).unwrap_or_default() };
        let loopback_only = web.basic_auth_users.is_empty() && web.listen.is_some_and(|a| a.ip().is_loopback());
        Access { users: web.basic_auth_users.clone(), passed: Default::default(), verifying: Arc::new(tokio::sync::Semaphore::new(2)), decoy, loopback_only }
    }

    /// Ok when no users are configured or the request carries a valid user and password;
    /// otherwise the 401 to send.
    #[allow(clippy::result_large_err)]
    pub(crate) async fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        if self.loopback_only && !names_this_host(headers) {
            tracing::warn!("a request whose Host header names another site was refused (DNS rebinding?)");
            return Err(misdirected());
        }
        if self.users.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b64| base64_decode(b64.trim()))
            .and_then(|raw| String::from_utf8(raw).ok());
        if let Some((user, password)) = given.as_deref().and_then(|g| g.split_once(':')) {
            let key = ring::digest::digest(&ring::digest::SHA256, format!("{user}:{password}").as_bytes()).as_ref().to_vec();
            if self.passed.lock().map(|p| p.contains(&key)).unwrap_or(false) {
                return Ok(());
            }
            // bcrypt costs tens of milliseconds by design: off the runtime's workers, two at a
            // time (a flood of wrong passwords gets 401 at once rather than queueing), and
            // against a hash of the same cost for an unknown user (no timing tells users apart).
            let Ok(permit) = self.verifying.clone().try_acquire_owned() else {
                return Err(unauthorized());
            };
            let hash = self.users.get(user).cloned();
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| self.decoy.clone());
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if known && ok {
                if let Ok(mut p) = self.passed.lock() {
                    // Bounded: a client trying passwords cannot grow it (only ones that passed).
                    if p.len() < 64 {
                        p.insert(key);
                    }
                }
                return Ok(());
            }
            tracing::warn!(user = %user.chars().take(64).collect::<String>(), "metrics endpoint: wrong user name or password");
        }
        Err(unauthorized())
    }
}

/// Whether the request's `Host` is an IP address, `localhost` or a name under `.localhost`
/// (what a browser sends for this host itself), with any port; a request without one (not
/// from a browser) passes.
fn names_this_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else { return true };
    let Ok(host) = host.to_str() else { return false };
    if let Some(literal) = host.strip_prefix('[') {
        // An IPv6 literal, `[::1]:9090`.
        return literal.split_once(']').is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(name, _)| name);
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}

fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        "421 Misdirected Request: on a loopback listener without basic auth, the Host header must be an IP address or localhost (a page of another site may be reaching this agent by DNS rebinding); behind a proxy, pass the upstream's host, or set metrics.basic_auth_users\n",
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"ucwa-agent\", charset=\"UTF-8\"")],
        "401 Unauthorized: this endpoint asks for a user name and password (metrics.basic_auth_users)\n",
    )
        .into_response()
}

/// Standard base64 (with or without padding); None if it is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s {
        acc = (acc << 6) | val(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: Option<&str>) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Some(h) = h {
            m.insert(header::HOST, h.parse().unwrap());
        }
        m
    }

    #[test]
    fn only_a_host_that_names_this_host_passes_a_loopback_listener() {
        for ok in [None, Some("127.0.0.1:9090"), Some("localhost:9090"), Some("LOCALHOST"), Some("[::1]:9090"), Some("agent.localhost"), Some("10.1.2.3")] {
            assert!(names_this_host(&host(ok)), "{ok:?}");
        }
        for refused in ["attacker.example:9090", "attacker.example", "127.0.0.1.nip.io", "localhost.attacker.example", "[::1", "[evil]:1"] {
            assert!(!names_this_host(&host(Some(refused))), "{refused}");
        }
    }
}
