//! The HTTP front of the simulator: one axum fallback service that routes on lower-cased path
//! segments, because UCWA clients may send any case (PROTOCOL.md §1).

use super::calls::{self, CallCommand, CallSpec, Direction};
use super::channel::SimEvent;
use super::directory;
use super::reply::Reply;
use super::resources::{self, app_path};
use super::state::{Counters, Fault, SimState};
use super::{control, generator, SimConfig};
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    pub fn set_quirks(&self, quirks: super::Quirks) {
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
            let r = if quirks.is_empty() || control { r } else { super::quirks::reshape(r, &quirks) };
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
            if !wants_json && shared.lock().quirks.contains(&super::Quirk::XmlAutodiscover) {
                return super::quirks::xml_discovery(&doc).into();
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
            Ok(user) => ucwa(shared, &req, &user, rest).await,
            Err(r) => r.into(),
        },
        _ => not_found().into(),
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

/// Tells every application of `user` that its `me/<rel>` resource was updated, as a pool does
/// when one client changes the account.
fn announce_to_user(st: &mut SimState, user: &str, rel: &str) {
    let apps: Vec<u64> = st.apps.values().filter(|a| a.user == user).map(|a| a.id).collect();
    for id in apps {
        let p = app_path(id);
        let event = json!({"link": {"rel": rel, "href": format!("{p}/me/{rel}")}, "type": "updated"});
        st.push(id, vec![SimEvent { sender_rel: "me", sender_href: format!("{p}/me"), event }]);
    }
}

/// What a pool's XFrame.html is for: a page that relays requests from a browser iframe.
const XFRAME_PAGE: &str = "<!DOCTYPE html><html><head><title>XFrame</title></head><body><!-- UCWA cross-domain relay: browser clients only --></body></html>";

/// The operations the simulator links to (POST only): a GET on one answers 405, as a pool does.
const OPERATIONS: &[&str] = &[
    "makemeavailable",
    "reportmyactivity",
    "batch",
    "acceptwithanswer",
    "decline",
    "cancel",
    "stopaudiovideo",
    "stopaudio",
    "addvideo",
    "addparticipant",
    "acceptwithphoneaudio",
    "renegotiations",
    "publishcallqualityfeedback",
    "audiovideoinvitations",
    "messaginginvitations",
    "accept",
    "terminate",
    "messages",
    "onlinemeetinginvitations",
    "turnoffcallforwarding",
    "immediateforwardtocontact",
    "immediateforwardtovoicemail",
    "simultaneousringtocontact",
];

/// A forwarding operation under `me/callForwardingSettings`: the setting it makes, and whether
/// it takes a `target`.
fn forwarding_operation(path: &[&str]) -> Option<(&'static str, bool)> {
    match path {
        ["turnoffcallforwarding"] => Some(("Off", false)),
        ["immediateforwardsettings", "immediateforwardtocontact"] => Some(("ImmediateForward", true)),
        ["immediateforwardsettings", "immediateforwardtovoicemail"] => Some(("ImmediateForward", false)),
        ["simultaneousringsettings", "simultaneousringtocontact"] => Some(("SimultaneousRing", true)),
        _ => None,
    }
}

fn is_operation(path: &[&str]) -> bool {
    path.last().is_some_and(|last| OPERATIONS.contains(last))
}

fn operation_only() -> Reply {
    Reply::error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None, "This is an operation: use POST.")
}

fn not_found() -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "NotFound", Some("ResourceNotFound"), "The requested resource was not found.")
}

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
        if st.quirks.contains(&super::Quirk::InvalidToken403) {
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
                resources::TOKEN_PATH
            ),
        ))
}

/// `POST /WebTicket/oauthtoken`: the password grant (urlencoded or multipart form).
fn token(shared: &Shared, req: &Req) -> Reply {
    let content_type = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let form = super::form::fields(content_type, &req.body);
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
    st.tokens.insert(token.clone(), super::state::Token { user, expires_at: Instant::now() + lifetime });
    Counters::bump(&shared.counters.tokens_issued);
    Reply::json(StatusCode::OK, &json!({"access_token": token, "expires_in": lifetime.as_secs(), "ms_rtc_identityscope": "local", "token_type": "Bearer"}))
        .header(header::CACHE_CONTROL, "no-store")
}

fn random_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 64)
}

/// Everything under `/ucwa/oauth/v1/applications`.
async fn ucwa(shared: &Arc<Shared>, req: &Req, user: &str, rest: &[&str]) -> Answer {
    let post = req.method == Method::POST;
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let (id, rest) = match rest {
        [] if post => return create_application(shared, req, user).into(),
        [] => return Reply::error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", None, "Use POST.").into(),
        [id, rest @ ..] => match id.parse::<u64>() {
            Ok(id) => (id, rest),
            Err(_) => return not_found().into(),
        },
    };
    if rest == ["events"] && get {
        return super::poll::poll(shared, req, user, id).await;
    }
    let now = Instant::now();
    let mut st = shared.lock();
    st.expire_idle(&shared.config, now, &shared.counters);
    let no_me = st.quirks.contains(&super::Quirk::NoMe);
    let profile = st.profiles.get(user).cloned().unwrap_or_default();
    let mut users: Vec<String> = st.users.keys().cloned().collect();
    users.sort();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let Some(app) = st.app_of(id, user) else {
        return Reply::error(StatusCode::NOT_FOUND, "NotFound", Some("ApplicationNotFound"), "The application does not exist.").into();
    };
    app.last_seen = now;
    match rest {
        [] if get => Reply::json(StatusCode::OK, &resources::application(app)).into(),
        [] if req.method == Method::DELETE => {
            st.remove_app(id);
            Counters::bump(&shared.counters.applications_deleted);
            Reply::no_content().into()
        }
        ["me"] if get && no_me => not_found().into(),
        ["me"] if get => Reply::json(StatusCode::OK, &resources::me(app)).into(),
        ["me", "presence"] if get => Reply::json(StatusCode::OK, &directory::presence(app, &profile)).into(),
        ["me", "note"] if get => Reply::json(StatusCode::OK, &directory::note(app, &profile)).into(),
        ["me", what @ ("presence" | "note")] if post => {
            let body = json_body(req);
            let field = |k: &str| member(&body, k).and_then(|v| v.as_str()).map(str::to_string);
            let bad = |m: String| Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), &m).into();
            let user = user.to_string();
            let mut changed = profile.clone();
            if *what == "presence" {
                match field("availability") {
                    Some(a) if directory::AVAILABILITIES.contains(&a.as_str()) => changed.availability = Some(a),
                    other => return bad(format!("availability must be one of {:?}, not {other:?}", directory::AVAILABILITIES)),
                }
            } else {
                match field("message") {
                    Some(m) if m.chars().count() <= 1000 => changed.note = m,
                    _ => return bad("message must be a text of at most 1000 characters".into()),
                }
            }
            let rel = if *what == "presence" { "presence" } else { "note" };
            st.profiles.insert(user.clone(), changed);
            announce_to_user(&mut st, &user, rel);
            if rel == "presence" {
                st.presence_changed(&user);
            }
            Reply::no_content().into()
        }
        ["me", "location"] if get => Reply::json(StatusCode::OK, &directory::location(app)).into(),
        ["me", "phones"] if get => Reply::json(StatusCode::OK, &directory::phones(app)).into(),
        ["me", "phones", "work"] if get => Reply::json(StatusCode::OK, &directory::phone(app)).into(),
        ["me", "callforwardingsettings"] if get => Reply::json(StatusCode::OK, &directory::call_forwarding_settings(app, &profile)).into(),
        ["me", "callforwardingsettings", "immediateforwardsettings"] if get => {
            Reply::json(StatusCode::OK, &directory::immediate_forward_settings(app, &profile)).into()
        }
        ["me", "callforwardingsettings", "simultaneousringsettings"] if get => {
            Reply::json(StatusCode::OK, &directory::simultaneous_ring_settings(app, &profile)).into()
        }
        ["me", "callforwardingsettings", op @ ..] if post && forwarding_operation(op).is_some() => {
            let body = json_body(req);
            let target = member(&body, "target").and_then(|v| v.as_str());
            let (setting, needs_target) = forwarding_operation(op).expect("checked in the guard");
            let target = match (needs_target, target) {
                (false, _) => {
                    if setting == "ImmediateForward" {
                        "voicemail".to_string()
                    } else {
                        String::new()
                    }
                }
                (true, Some(t)) if t.starts_with("sip:") || t.starts_with("tel:") => t.to_string(),
                (true, other) => {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        Some("ParameterValidationFailure"),
                        &format!("target must be a sip: or tel: URI, not {other:?}"),
                    )
                    .into()
                }
            };
            let user = user.to_string();
            let mut changed = profile.clone();
            changed.forwarding = super::state::Forwarding { setting, target };
            st.profiles.insert(user.clone(), changed);
            announce_to_user(&mut st, &user, "callForwardingSettings");
            Reply::no_content().into()
        }
        ["photos", _] if get => Reply::bytes(StatusCode::OK, "image/png", directory::PHOTO_PNG).into(),
        ["policies"] if get => Reply::json(StatusCode::OK, &directory::policies(app)).into(),
        ["people"] if get => Reply::json(StatusCode::OK, &directory::people(app)).into(),
        ["people", sub @ ..] if sub.first().is_some_and(|s| s.starts_with("presencesubscription")) => {
            match super::presence::route(shared, &mut st, req, id, sub) {
                Some(reply) => reply.into(),
                None => not_found().into(),
            }
        }
        ["onlinemeetings"] if get => Reply::json(StatusCode::OK, &directory::online_meetings(app)).into(),
        ["onlinemeetings", "myonlinemeetings"] if get => Reply::json(StatusCode::OK, &directory::my_online_meetings(app)).into(),
        ["communication", "audiovideopolicies"] if get => Reply::json(StatusCode::OK, &directory::audio_video_policies(app)).into(),
        ["people", "contacts"] if get => Reply::json(StatusCode::OK, &directory::my_contacts(app, &users)).into(),
        ["people", "search"] if get => match req.query.get("query").filter(|q| !q.trim().is_empty()) {
            None => Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "search needs ?query=.").into(),
            Some(q) => Reply::json(StatusCode::OK, &directory::search(app, &users, q)).into(),
        },
        ["people", person, what @ ("presence" | "note" | "location")] if get && person.contains('@') => {
            let resource = match *what {
                "presence" => directory::contact_presence(id, person, &st.availability_of(person)),
                "note" => directory::contact_note(id, person, &st.profiles.get(*person).map(|p| p.note.clone()).unwrap_or_default()),
                _ => directory::contact_location(id, person),
            };
            Reply::json(StatusCode::OK, &resource).into()
        }
        // Anyone the pool can name: the simulator's accounts and the callers it invents.
        ["people", person] if get && person.contains('@') => Reply::json(StatusCode::OK, &directory::contact(app, person)).into(),
        ["communication"] if get => Reply::json(StatusCode::OK, &resources::communication(app)).into(),
        ["me", "makemeavailable"] if post => {
            if app.available {
                return Reply::error(StatusCode::CONFLICT, "Conflict", Some("AlreadyExists"), "makeMeAvailable was already done.").into();
            }
            app.available = true;
            app.modalities = member(&json_body(req), "supportedModalities").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
            app.etag += 1;
            let events = available_events(app);
            app.channel.push(events);
            Reply::no_content().into()
        }
        ["me", "reportmyactivity"] | ["reportmyactivity"] if post => {
            if !app.available {
                return Reply::error(StatusCode::CONFLICT, "Conflict", Some("MakeMeAvailableRequired"), "Call makeMeAvailable first.").into();
            }
            Counters::bump(&shared.counters.report_my_activity);
            Reply::no_content().into()
        }
        ["communication", "messaginginvitations"] if post => {
            let user = user.to_string();
            drop(st);
            super::messaging::start(shared, &json_body(req), id, &user).into()
        }
        ["communication", "audiovideoinvitations"] if post => {
            drop(st);
            start_outgoing(shared, req, id).into()
        }
        ["communication", "messaginginvitations", inv, action @ ..] => match super::messaging::invitation_route(&mut st, req, id, inv, action) {
            Some(reply) => reply.into(),
            None if get && is_operation(action) => operation_only().into(),
            None => not_found().into(),
        },
        ["communication", "conversations", conv, modality @ ..] if conv.parse::<u64>().is_ok_and(|c| st.im_of(id, c).is_some()) => {
            let conv = conv.parse::<u64>().expect("checked in the guard");
            match super::messaging::conversation_route(&mut st, req, id, conv, modality) {
                Some(reply) => reply.into(),
                None if get && is_operation(modality) => operation_only().into(),
                None => not_found().into(),
            }
        }
        ["communication", "audiovideoinvitations", inv, action @ ..] => {
            let Some(call) = st.calls.values().find(|c| c.app_id == id && c.invitation_id == *inv) else {
                return not_found().into();
            };
            match action {
                [] if get => Reply::json(StatusCode::OK, &resources::invitation(call)).into(),
                ["acceptwithanswer"] if post && call.direction == Direction::Incoming => {
                    // The answer is an SDP (REFERENCE.md §5: `Content-Type: application/sdp` → 204).
                    let sdp = req
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|ct| ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")));
                    if !sdp {
                        return Reply::error(
                            StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            "UnsupportedMediaType",
                            None,
                            "acceptWithAnswer takes an SDP answer (Content-Type: application/sdp).",
                        )
                        .into();
                    }
                    send(call, CallCommand::Accept)
                }
                ["decline"] if post && call.direction == Direction::Incoming => send(call, CallCommand::Decline),
                // Answered on a phone: the pool calls that number and bridges it (no media here).
                ["acceptwithphoneaudio"] if post && call.direction == Direction::Incoming => {
                    let body = json_body(req);
                    let number = member(&body, "phoneNumber").and_then(|v| v.as_str()).filter(|n| n.starts_with("tel:"));
                    let Some(number) = number.map(str::to_string) else {
                        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "phoneNumber must be a tel: URI.")
                            .into();
                    };
                    if call.phase != calls::Phase::Ringing {
                        return Reply::error(StatusCode::CONFLICT, "Conflict", Some("InvalidState"), "The call is not ringing.").into();
                    }
                    let answered = send(call, CallCommand::Accept);
                    let call_id = call.id;
                    if let Some(c) = st.calls.get_mut(&call_id) {
                        c.answered_on = Some(number);
                    }
                    answered
                }
                ["cancel"] if post && call.direction == Direction::Outgoing => send(call, CallCommand::End),
                _ if get && is_operation(action) => operation_only().into(),
                _ => not_found().into(),
            }
        }
        ["communication", "conversations"] if get => {
            // `?filter=active` (the only form linked): the conversations of calls in progress.
            let mut live: Vec<serde_json::Value> =
                st.calls.values().filter(|c| c.app_id == id && c.phase != calls::Phase::Ended).map(resources::conversation).collect();
            live.extend(super::messaging::active(&st, id));
            let body = serde_json::json!({
                "rel": "conversations",
                "_links": {"self": {"href": format!("{}/communication/conversations?filter=active", app_path(id))}},
                "_embedded": {"conversation": live},
            });
            Reply::json(StatusCode::OK, &body).into()
        }
        ["communication", "conversations", conv, modality @ ..] => {
            let Some(call) = conv.parse::<u64>().ok().and_then(|c| st.calls.get(&c)).filter(|c| c.app_id == id) else {
                return not_found().into();
            };
            match modality {
                [] if get => Reply::json(StatusCode::OK, &resources::conversation(call)).into(),
                ["audiovideo"] if get => Reply::json(StatusCode::OK, &resources::audio_video(call)).into(),
                ["audiovideo", "audiovideosession"] if get && call.phase == calls::Phase::Connected => {
                    Reply::json(StatusCode::OK, &resources::session(call)).into()
                }
                ["audiovideo", "stopaudiovideo" | "stopaudio"] if post => send(call, CallCommand::End),
                ["participants"] if get => Reply::json(StatusCode::OK, &resources::participants(call)).into(),
                ["participants", "local"] if get => Reply::json(StatusCode::OK, &resources::local_participant(call)).into(),
                ["participants", who]
                    if get
                        && (resources::remote_participant_path(call).to_ascii_lowercase().ends_with(&format!("/{who}"))
                            || super::quirks::opaque_id(&call.remote_uri) == *who) =>
                {
                    Reply::json(StatusCode::OK, &resources::participant(call)).into()
                }
                [m @ ("messaging" | "datacollaboration" | "applicationsharing")] if get => {
                    let rel = match *m {
                        "messaging" => "messaging",
                        "datacollaboration" => "dataCollaboration",
                        _ => "applicationSharing",
                    };
                    Reply::json(StatusCode::OK, &resources::idle_modality(call, rel)).into()
                }
                _ if get && is_operation(modality) => operation_only().into(),
                _ => not_found().into(),
            }
        }
        _ if get && is_operation(rest) => operation_only().into(),
        _ => not_found().into(),
    }
}

fn send(call: &calls::CallRecord, cmd: CallCommand) -> Answer {
    let _ = call.commands.send(cmd);
    Reply::no_content().into()
}

/// The events makeMeAvailable produces (`events-response-next.json`).
fn available_events(app: &super::state::App) -> Vec<SimEvent> {
    let p = app_path(app.id);
    let me = |rel: &str, kind: &str, href: String| SimEvent {
        sender_rel: "me",
        sender_href: format!("{p}/me"),
        event: json!({"link": {"rel": rel, "href": href}, "type": kind}),
    };
    vec![
        SimEvent {
            sender_rel: "communication",
            sender_href: format!("{p}/communication"),
            event: json!({"link": {"rel": "communication", "href": format!("{p}/communication")},
                          "_embedded": {"communication": resources::communication(app)}, "type": "updated"}),
        },
        me("me", "updated", format!("{p}/me")),
        me("presence", "added", format!("{p}/me/presence")),
        me("note", "added", format!("{p}/me/note")),
        me("location", "added", format!("{p}/me/location")),
    ]
}

/// `POST applications` (PROTOCOL.md §3): keys matched case-insensitively, unknown keys ignored.
fn create_application(shared: &Shared, req: &Req, user: &str) -> Reply {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(strip_bom(&req.body)) else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("DeserializationFailure"), "The body is not a JSON object.");
    };
    let field = |name: &str| body.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str());
    let (Some(agent), Some(endpoint), Some(culture)) = (field("userAgent"), field("endpointId"), field("culture")) else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "userAgent, endpointId and culture are required.");
    };
    if agent.len() > 100 {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "userAgent is too long.");
    }
    let now = Instant::now();
    let mut st = shared.lock();
    st.expire_idle(&shared.config, now, &shared.counters);
    let (id, created) = st.create_app(user, endpoint, agent, culture, shared.config.min_poll_timeout, now);
    if created {
        Counters::bump(&shared.counters.applications_created);
    }
    let app = &st.apps[&id];
    Reply::json(if created { StatusCode::CREATED } else { StatusCode::OK }, &resources::application(app)).header(header::LOCATION, app_path(id))
}

/// `POST communication/audioVideoInvitations` (startAudioVideo): an outgoing call.
fn start_outgoing(shared: &Arc<Shared>, req: &Req, app_id: u64) -> Reply {
    let body = json_body(req);
    let field = |name: &str| member(&body, name).and_then(|v| v.as_str()).map(str::to_string);
    let Some(to) = field("to") else {
        return Reply::error(StatusCode::BAD_REQUEST, "BadRequest", Some("ParameterValidationFailure"), "`to` is required.");
    };
    let spec = CallSpec {
        direction: Direction::Outgoing,
        remote: Some(to),
        subject: field("subject"),
        operation_id: field("operationId").or_else(|| req.query.get("operationid").cloned()),
        ..CallSpec::default()
    };
    match calls::start_call(shared, spec, Some(app_id)) {
        Ok(id) => {
            let st = shared.lock();
            match st.calls.get(&id) {
                Some(call) => Reply::json(StatusCode::CREATED, &resources::invitation(call)).header(header::LOCATION, resources::invitation_path(call)),
                None => Reply::error(StatusCode::GONE, "Gone", None, "The call ended."),
            }
        }
        Err(e) => Reply::error(StatusCode::CONFLICT, "Conflict", Some("MakeMeAvailableRequired"), &e),
    }
}

pub(crate) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
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
