//! Sign-in: discovery document → user resource's 401 challenge → password grant → user resource
//! with the token → `applications` (PROTOCOL.md §1–2). `redirect` links are followed, bounded.

use super::auth::Auth;
use super::challenge;
use super::origin::is_loopback;
use super::session::{status_error, strip_bom, transport};
use super::{link, Origin, Session, UcwaError};
use crate::metrics::Metrics;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How many `redirect` links sign-in follows before it gives up (loops, misconfiguration).
const MAX_REDIRECTS: usize = 4;

/// The result of signing in: a session on the user's pool and where applications are created.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: Arc<Session>,
    pub applications_href: String,
}

/// One step of a sign-in, as `check --online` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The step now starting (`discovery`, `challenge`, `token`, `user`, `applications`).
    Begin(&'static str),
    /// The step that began last succeeded; what it found.
    Done(String),
}

/// Signs in from a discovery URL.
pub async fn sign_in(http: &reqwest::Client, discover: &Url, auth: &Auth, metrics: Option<Arc<Metrics>>) -> Result<SignedIn, UcwaError> {
    sign_in_steps(http, discover, auth, metrics, &mut |_| {}).await
}

/// [`sign_in`], telling `step` where it is.
pub async fn sign_in_steps(
    http: &reqwest::Client,
    discover: &Url,
    auth: &Auth,
    metrics: Option<Arc<Metrics>>,
    step: &mut (dyn FnMut(Step) + Send),
) -> Result<SignedIn, UcwaError> {
    step(Step::Begin("discovery"));
    let mut user_url = discover_user(http, discover).await?;
    step(Step::Done(format!("the user resource is {user_url}")));
    for _ in 0..=MAX_REDIRECTS {
        check_scheme(&user_url)?;
        let token_url = match auth {
            Auth::Password { .. } => {
                step(Step::Begin("challenge"));
                let url = challenge_of(http, &user_url).await?;
                step(Step::Done(format!("401 with an MsRtcOAuth challenge; the token endpoint is {url}")));
                Some(url)
            }
            Auth::Bearer { .. } => None,
        };
        let session = Session::new(http.clone(), Origin::of(&user_url), token_url, auth.clone())?.with_metrics(metrics.clone());
        step(Step::Begin("token"));
        session.sign_in().await?;
        step(Step::Done(match auth {
            Auth::Password { username, .. } => format!("a token for {username}"),
            Auth::Bearer { source, .. } => format!("a bearer token from {}", source.describe()),
        }));
        step(Step::Begin("user"));
        let user = session.get_json(user_url.as_str()).await?;
        if let Some(apps) = link(&user, "applications") {
            step(Step::Done(format!("applications are created at {}", user_url.join(apps).map_or_else(|_| apps.to_string(), |u| u.to_string()))));
            let apps_url = user_url.join(apps).map_err(|e| malformed(&user_url, e))?;
            check_scheme(&apps_url)?;
            let pool = Origin::of(&apps_url);
            if pool == *session.origin() {
                return Ok(SignedIn { applications_href: apps.to_string(), session: Arc::new(session) });
            }
            // Online: applications live on a pool host other than the user resource's host.
            if matches!(auth, Auth::Password { .. }) {
                return Err(UcwaError::SignIn(format!(
                    "applications are on {} but the password grant was made on {}; not sending the token there",
                    pool.as_str(),
                    session.origin().as_str()
                )));
            }
            let session = session.for_origin(pool)?;
            session.sign_in().await?;
            return Ok(SignedIn { applications_href: apps_url.to_string(), session: Arc::new(session) });
        }
        // The user is homed on another pool: sign in again there.
        let redirect = link(&user, "redirect").ok_or_else(|| UcwaError::Malformed {
            url: user_url.to_string(),
            message: "the user resource has neither an `applications` nor a `redirect` link".into(),
        })?;
        user_url = user_url.join(redirect).map_err(|e| malformed(&user_url, e))?;
        step(Step::Done(format!("the user is homed on another pool: redirected to {user_url}")));
        tracing::info!(to = %user_url, "user resource redirects to another pool");
    }
    Err(UcwaError::SignIn(format!("more than {MAX_REDIRECTS} user redirects; stopping")))
}

/// Follows the discovery document (and its redirects) to the user resource.
async fn discover_user(http: &reqwest::Client, discover: &Url) -> Result<Url, UcwaError> {
    let mut url = discover.clone();
    for _ in 0..=MAX_REDIRECTS {
        check_scheme(&url)?;
        let doc = get_json_anonymous(http, &url).await?;
        if let Some(user) = link(&doc, "user") {
            return url.join(user).map_err(|e| malformed(&url, e));
        }
        let redirect = link(&doc, "redirect").ok_or_else(|| UcwaError::Malformed {
            url: url.to_string(),
            message: "the discovery document has neither a `user` nor a `redirect` link".into(),
        })?;
        url = url.join(redirect).map_err(|e| malformed(&url, e))?;
        tracing::info!(to = %url, "discovery redirects");
    }
    Err(UcwaError::SignIn(format!("more than {MAX_REDIRECTS} discovery redirects; stopping")))
}

/// GETs the user resource without a token and reads the MsRtcOAuth token endpoint from the 401.
async fn challenge_of(http: &reqwest::Client, user_url: &Url) -> Result<Url, UcwaError> {
    let resp = http
        .get(user_url.clone())
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| transport("GET", user_url.as_str(), e))?;
    if resp.status().as_u16() != 401 {
        return Err(UcwaError::SignIn(format!(
            "{user_url} answered HTTP {} without a token; a UCWA pool answers 401 with an MsRtcOAuth challenge",
            resp.status().as_u16()
        )));
    }
    let headers: Vec<&str> = resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
    let challenges = challenge::parse_all(headers);
    let oauth = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("MsRtcOAuth")).ok_or_else(|| {
        UcwaError::SignIn(format!("{user_url} sent no MsRtcOAuth challenge (schemes: {:?})", challenges.iter().map(|c| &c.scheme).collect::<Vec<_>>()))
    })?;
    let grants = oauth.param("grant_type").unwrap_or("");
    if !grants.split(',').any(|g| g.trim() == "password") {
        return Err(UcwaError::SignIn(format!("the pool does not offer the password grant (offers: {grants})")));
    }
    let href = oauth.param("href").ok_or_else(|| UcwaError::SignIn("the MsRtcOAuth challenge has no href".to_string()))?;
    user_url.join(href).map_err(|e| malformed(user_url, e))
}

async fn get_json_anonymous(http: &reqwest::Client, url: &Url) -> Result<Value, UcwaError> {
    let resp = http
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| transport("GET", url.as_str(), e))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| transport("GET", url.as_str(), e))?;
    let reply = super::HttpReply { status, headers, body };
    if !(200..300).contains(&status) {
        return Err(status_error(&Method::GET, url.as_str(), &reply));
    }
    serde_json::from_slice(strip_bom(&reply.body)).map_err(|e| UcwaError::Malformed { url: url.to_string(), message: format!("body is not JSON: {e}") })
}

/// Plain http only to loopback: credentials never cross a network in clear text.
fn check_scheme(url: &Url) -> Result<(), UcwaError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        _ => Err(UcwaError::SignIn(format!("refusing {url}: only https:// (or http:// to a loopback host) is used"))),
    }
}

fn malformed(base: &Url, e: url::ParseError) -> UcwaError {
    UcwaError::Malformed { url: base.to_string(), message: format!("bad href: {e}") }
}
