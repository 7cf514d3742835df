//! The HTTP front of the simulator: one axum fallback service that routes on lower-cased path
//! segments, because UCWA clients may send any case (PROTOCOL.md §1).

use super::calls;
use super::config::SimConfig;
use super::fault::Fault;
use super::model::{CallCommand, CallSpec, Token};
use super::paths;
use super::quirks::{self, Quirk, Quirks};
use super::reply::Reply;
use super::resources;
use super::routes;
use super::shared::{not_found, Answer, Req, Shared};
use super::state::{Counters, SimState};
use super::{control, form, generator};
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running simulator; dropping it stops the server.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `listen` (port 0 for an ephemeral one) and serves until shut down.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<Simulator> {
        let acceptor = config.tls.as_ref().map(|t| t.acceptor()).transpose()?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let shared =
            Arc::new(Shared { state: Mutex::new(SimState::new(&config)), config, counters: Counters::default(), origin: format!("{scheme}://{addr}") });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let generator = generator::spawn(shared.clone());
        let stopped = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            let served = match acceptor {
                None => axum::serve(listener, router).with_graceful_shutdown(stopped).await,
                Some(a) => axum::serve(crate::tls::TlsListener::new(listener, a), router).with_graceful_shutdown(stopped).await,
            };
            if let Some(g) = generator {
                g.abort();
            }
            if let Err(error) = served {
                tracing::error!(%error, "simulator server stopped");
            }
        });
        tracing::info!(origin = %shared.origin, "UCWA simulator listening");
        Ok(Simulator { shared, addr, stop: Some(stop), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The discovery URL a client starts from (`<origin>/`).
    pub fn discovery_url(&self) -> String {
        format!("{}/", self.shared.origin)
    }

    /// Starts a call (as the control API's `POST /sim/v1/calls` does).
    pub fn start_call(&self, spec: CallSpec) -> Result<u64, String> {
        calls::start_call(&self.shared, spec, None)
    }

    /// Hangs up (or cancels) a call; false if there is no such call.
    pub fn end_call(&self, id: u64) -> bool {
        control::command_call(&self.shared, id, CallCommand::End)
    }

    /// Turns quirks on (replacing the ones on), as `PUT /sim/v1/quirks` does.
    pub fn set_quirks(&self, quirks: Quirks) {
        self.shared.lock().quirks = quirks;
    }

    /// Changes an account's password (as `PUT /sim/v1/users/<name>` does); false if unknown.
    pub fn set_password(&self, user: &str, password: &str) -> bool {
        control::set_user_password(&self.shared, user, password)
    }

    /// What adds users to this simulator while it runs (an account added on SIGHUP).
    pub fn user_adder(&self) -> UserAdder {
        UserAdder(self.shared.clone())
    }

    /// Injects a fault `count` times (as `POST /sim/v1/faults` does).
    pub fn inject(&self, fault: Fault, count: usize) {
        control::inject(&self.shared, fault, count, None);
    }

    /// Injects a fault `count` times on one account's channel, tokens or applications only
    /// (as `POST /sim/v1/faults` with `"user"` does).
    pub fn inject_for(&self, user: &str, fault: Fault, count: usize) {
        control::inject(&self.shared, fault, count, Some(user));
    }

    /// The counters (as `GET /sim/v1/counters` answers).
    pub fn counters(&self) -> Value {
        self.shared.counters.snapshot()
    }

    /// Stops accepting requests and waits for the server task.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let gzip = parts.headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains("gzip"));
    let head = parts.method == Method::HEAD;
    let body = match to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "BadRequest", None, "Body too large.").into_response(false, head),
    };
    let path = parts.uri.path().to_ascii_lowercase();
    let req = Req {
        method: parts.method,
        segs: path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
        headers: parts.headers,
        body,
    };
    let control = req.segs.first().is_some_and(|s| s == "sim");
    match route(&shared, req).await {
        Answer::Reply(r) => {
            let quirks = shared.lock().quirks.clone();
            let r = if quirks.is_empty() || control { r } else { quirks::reshape(r, &quirks) };
            r.into_response(gzip, head)
        }
        Answer::Raw(resp) => resp,
    }
}

async fn route(shared: &Arc<Shared>, req: Req) -> Answer {
    let segs: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    let get = req.method == Method::GET || req.method == Method::HEAD;
    match segs.as_slice() {
        [] | ["autodiscover", "autodiscoverservice.svc", "root"] if get => {
            let doc = resources::discovery(&shared.origin);
            let wants_json = req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("json"));
            if !wants_json && shared.lock().quirks.contains(&Quirk::XmlAutodiscover) {
                return quirks::xml_discovery(&doc).into();
            }
            Reply::json(StatusCode::OK, &doc).into()
        }
        ["autodiscover", "autodiscoverservice.svc", "root", "oauth", "user"] | ["autodiscover", "autodiscoverservice.svc", "root", "user"] if get => {
            match authorize(shared, &req.headers) {
                Ok(_) => Reply::json(StatusCode::OK, &resources::user(&shared.origin)).into(),
                Err(r) => r.into(),
            }
        }
        // The cross-domain iframe page browsers' UCWA libraries load; nothing for an agent.
        ["autodiscover", "xframe", "xframe.html"] if get => Reply::html(StatusCode::OK, XFRAME_PAGE).into(),
        ["webticket", "oauthtoken"] if req.method == Method::POST => token(shared, &req).into(),
        ["sim", "v1", rest @ ..] => control::route(shared, &req, rest).into(),
        ["ucwa", "oauth", "v1", "applications", rest @ ..] => match authorize(shared, &req.headers) {
            Ok(user) => routes::ucwa(shared, &req, &user, rest).await,
            Err(r) => r.into(),
        },
        _ => not_found().into(),
    }
}

/// What a pool's XFrame.html is for: a page that relays requests from a browser iframe.
const XFRAME_PAGE: &str = "<!DOCTYPE html><html><head><title>XFrame</title></head><body><!-- UCWA cross-domain relay: browser clients only --></body></html>";

/// The user a request's bearer token stands for, or the 401 challenge (PROTOCOL.md §2).
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Reply> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let mut status = StatusCode::UNAUTHORIZED;
    if let Some(token) = token {
        let st = shared.lock();
        if let Some(user) = st.token_user(token, Instant::now()) {
            return Ok(user);
        }
        if st.quirks.contains(&Quirk::InvalidToken403) {
            status = StatusCode::FORBIDDEN;
        }
    }
    Counters::bump(&shared.counters.unauthorized);
    let page = if status == StatusCode::FORBIDDEN {
        "<html><body><h2>403 - Forbidden</h2></body></html>"
    } else {
        "<html><body><h2>401 - Unauthorized</h2></body></html>"
    };
    let mut reply = Reply::html(status, page);
    if status == StatusCode::FORBIDDEN {
        reply = reply.header(header::WARNING, "120 \"InvalidToken\"");
    }
    Err(reply
        .header(
            header::WWW_AUTHENTICATE,
            r#"Bearer trusted_issuers="00000002-0000-0ff1-ce00-000000000000@contoso.com", client_id="00000004-0000-0ff1-ce00-000000000000""#,
        )
        .header(
            header::WWW_AUTHENTICATE,
            format!(
                r#"MsRtcOAuth href="{}{}",grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password""#,
                shared.origin,
                paths::TOKEN_PATH
            ),
        ))
}

/// `POST /WebTicket/oauthtoken`: the password grant (urlencoded or multipart form).
fn token(shared: &Shared, req: &Req) -> Reply {
    let content_type = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let form = form::fields(content_type, &req.body);
    let oauth_error = |e: &str| Reply::json(StatusCode::BAD_REQUEST, &json!({ "error": e }));
    match form.get("grant_type").map(String::as_str) {
        Some("password") => {}
        Some(_) => return oauth_error("unsupported_grant_type"),
        None => return oauth_error("invalid_request"),
    }
    let (Some(user), Some(password)) = (form.get("username"), form.get("password")) else {
        return oauth_error("invalid_request");
    };
    let user = user.to_ascii_lowercase();
    let mut st = shared.lock();
    if st.users.get(&user) != Some(password) {
        Counters::bump(&shared.counters.token_rejections);
        return oauth_error("invalid_grant");
    }
    let token = format!("cwt={}", random_token());
    let lifetime = shared.config.token_lifetime;
    st.tokens.insert(token.clone(), Token { user, expires_at: Instant::now() + lifetime });
    Counters::bump(&shared.counters.tokens_issued);
    Reply::json(StatusCode::OK, &json!({"access_token": token, "expires_in": lifetime.as_secs(), "ms_rtc_identityscope": "local", "token_type": "Bearer"}))
        .header(header::CACHE_CONTROL, "no-store")
}

fn random_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 64)
}

/// Adds users to a running simulator (cheap to clone).
#[derive(Clone)]
pub struct UserAdder(Arc<Shared>);

impl UserAdder {
    /// Adds `user` with `password` unless it exists (its password is then left alone).
    pub fn add(&self, user: &str, password: &str) {
        self.0.lock().users.entry(user.to_ascii_lowercase()).or_insert_with(|| password.to_string());
    }
}
