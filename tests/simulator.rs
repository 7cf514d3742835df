//! The simulator answers as PROTOCOL.md says, checked with a plain HTTP client.

mod common;

use common::{eventually, sim_config, start_sim};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use ucwa_agent::sim::{CallOutcome, CallSpec, SimConfig, Simulator};

struct Ucwa {
    http: Client,
    origin: String,
    token: String,
    app: String,
    events: String,
}

async fn token(http: &Client, origin: &str, user: &str, password: &str) -> reqwest::Response {
    http.post(format!("{origin}/WebTicket/oauthtoken"))
        .header("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")
        .body(format!("grant_type=password&username={user}&password={password}"))
        .send()
        .await
        .unwrap()
}

/// Signs in and creates an application, as a minimal client would.
async fn client(sim: &Simulator, available: bool) -> Ucwa {
    let http = Client::new();
    let origin = sim.origin().to_string();
    let t: Value = token(&http, &origin, "demo@contoso.com", "demo").await.json().await.unwrap();
    let token = t["access_token"].as_str().unwrap().to_string();
    let resp = http
        .post(format!("{origin}/ucwa/oauth/v1/applications"))
        .bearer_auth(&token)
        .json(&json!({"userAgent": "test", "endpointId": "e1", "culture": "en-US", "extra": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let app: Value = resp.json().await.unwrap();
    let c = Ucwa {
        app: app["_links"]["self"]["href"].as_str().unwrap().to_string(),
        events: app["_links"]["events"]["href"].as_str().unwrap().to_string(),
        http,
        origin,
        token,
    };
    if available {
        // `me` embedded (one object, or an array of one), or only at `<application>/me`.
        let me = match &app["_embedded"]["me"] {
            Value::Array(items) => items[0].clone(),
            Value::Null => c.get(&format!("{}/me", c.app)).await.json().await.unwrap(),
            one => one.clone(),
        };
        let mma = me["_links"]["makeMeAvailable"]["href"].as_str().unwrap();
        let r = c.post(mma, json!({"SupportedModalities": ["Audio"]})).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    c
}

impl Ucwa {
    async fn get(&self, href: &str) -> reqwest::Response {
        self.http.get(format!("{}{href}", self.origin)).bearer_auth(&self.token).send().await.unwrap()
    }
    async fn post(&self, href: &str, body: Value) -> reqwest::Response {
        self.http.post(format!("{}{href}", self.origin)).bearer_auth(&self.token).json(&body).send().await.unwrap()
    }
    async fn poll(&self, href: &str) -> Value {
        let r = self.get(&format!("{href}&timeout=1")).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
    /// Polls from `href` until `n` events arrived; returns (rel, type) pairs and the next href.
    async fn events(&self, mut href: String, n: usize) -> (Vec<(String, String)>, String) {
        let mut got = Vec::new();
        while got.len() < n {
            let b = self.poll(&href).await;
            for s in b["sender"].as_array().into_iter().flatten() {
                for e in s["events"].as_array().unwrap() {
                    got.push((e["link"]["rel"].as_str().unwrap().to_string(), e["type"].as_str().unwrap().to_string()));
                }
            }
            href = b["_links"]["next"]["href"].as_str().unwrap().to_string();
        }
        (got, href)
    }
}

#[tokio::test]
async fn discovery_and_the_401_challenge() {
    let sim = start_sim(sim_config()).await;
    // No gzip here: a client that decompresses drops Content-Length.
    let http = Client::builder().no_gzip().build().unwrap();
    for path in ["/", "/autodiscover/autodiscoverservice.svc/root", "/AutoDiscover/AutoDiscoverService.svc/Root"] {
        let r = http.get(format!("{}{path}", sim.origin())).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json; charset=utf-8");
        assert!(r.headers().contains_key("content-length"));
        let d: Value = r.json().await.unwrap();
        for rel in ["self", "user", "xframe"] {
            assert!(d["_links"][rel]["href"].as_str().unwrap().starts_with(sim.origin()), "{rel}");
        }
    }
    let user = format!("{}/Autodiscover/AutodiscoverService.svc/root/oauth/user", sim.origin());
    for req in [http.get(&user), http.head(&user)] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenges: Vec<&str> = r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(challenges.len(), 2);
        assert!(challenges.contains(
            &format!(
                "MsRtcOAuth href=\"{}/WebTicket/oauthtoken\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\"",
                sim.origin()
            )
            .as_str()
        ));
    }
    let bad = token(&http, sim.origin(), "demo@contoso.com", "wrong").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap(), json!({"error": "invalid_grant"}));
    let good = token(&http, sim.origin(), "demo@contoso.com", "demo").await;
    assert_eq!(good.headers()["cache-control"], "no-store");
    let t: Value = good.json().await.unwrap();
    assert!(t["access_token"].as_str().unwrap().starts_with("cwt="));
    assert_eq!(t["token_type"], "Bearer");
    let u: Value = http.get(&user).bearer_auth(t["access_token"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(u["_links"]["applications"]["href"], format!("{}/ucwa/oauth/v1/applications", sim.origin()));
}

#[tokio::test(start_paused = true)]
async fn tokens_expire() {
    let sim = start_sim(SimConfig { token_lifetime: Duration::from_secs(3600), app_idle_timeout: Duration::from_secs(86_400), ..sim_config() }).await;
    let c = client(&sim, false).await;
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(c.get(&c.app).await.status(), StatusCode::OK);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(c.get(&c.app).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn applications_are_matched_by_identity_and_keys_case_insensitively() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, false).await;
    let again = c
        .http
        .post(format!("{}/ucwa/oauth/v1/applications", c.origin))
        .bearer_auth(&c.token)
        .json(&json!({"UserAgent": "test", "EndpointId": "e1", "Culture": "en-US"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK, "same identity, same application");
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["_links"]["self"]["href"], c.app.as_str());
    let missing = c.post("/ucwa/oauth/v1/applications", json!({"UserAgent": "x"})).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(missing.json::<Value>().await.unwrap()["subcode"], "ParameterValidationFailure");
    let rma = c.post(&format!("{}/me/reportMyActivity", c.app), json!({})).await;
    assert_eq!(rma.status(), StatusCode::CONFLICT);
    assert_eq!(rma.json::<Value>().await.unwrap()["subcode"], "MakeMeAvailableRequired");
    let mma = c.post(&format!("{}/me/makeMeAvailable", c.app), json!({})).await;
    assert_eq!(mma.status(), StatusCode::NO_CONTENT);
    for path in ["/me/reportMyActivity", "/reportMyActivity"] {
        assert_eq!(c.post(&format!("{}{path}", c.app), json!({})).await.status(), StatusCode::NO_CONTENT);
    }
    let me: Value = c.get(&format!("{}/me", c.app)).await.json().await.unwrap();
    assert!(me["_links"].get("makeMeAvailable").is_none() && me["_links"].get("reportMyActivity").is_some());
    assert_eq!(c.http.delete(format!("{}{}", c.origin, c.app)).bearer_auth(&c.token).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let gone = c.get(&c.events).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(gone.json::<Value>().await.unwrap()["subcode"], "ApplicationNotFound");
}

#[tokio::test]
async fn event_channel_timeout_repeat_replace_and_resync() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, false).await;
    // Nothing happens: the held poll ends with an empty batch that links `next`.
    let empty = c.poll(&c.events).await;
    assert_eq!(empty["sender"], json!([]), "an empty batch has `\"sender\": []`: {empty}");
    let next = empty["_links"]["next"]["href"].as_str().unwrap().to_string();
    assert!(next.ends_with("events?ack=2"));
    // The same ack again: the same batch.
    assert_eq!(c.poll(&c.events).await, empty);
    // Out of range: a resync link to the first unacknowledged batch.
    let r = c.poll(&next.replace("ack=2", "ack=9")).await;
    assert!(r["_links"]["resync"]["href"].as_str().unwrap().ends_with("ack=1"), "{r}");
    // Two polls for one ack: the older one is released with 409 PGetReplaced.
    let first = c.http.get(format!("{}{next}&timeout=5", c.origin)).bearer_auth(&c.token).send();
    let polls = sim.counters()["polls"].as_u64().unwrap();
    let first = tokio::spawn(first);
    eventually("the first poll is held", || sim.counters()["polls"].as_u64().unwrap() > polls).await;
    let second = tokio::spawn(c.http.get(format!("{}{next}&timeout=1", c.origin)).bearer_auth(&c.token).send());
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CONFLICT);
    assert_eq!(first.json::<Value>().await.unwrap()["subcode"], "PGetReplaced");
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(sim.counters()["pget_replaced"], 1);
}

#[tokio::test]
async fn held_poll_is_answered_when_a_call_arrives_with_the_documented_sequence() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, true).await;
    let (setup, next) = c.events(c.events.clone(), 5).await;
    assert_eq!(setup[0], ("communication".into(), "updated".into()), "makeMeAvailable's events: {setup:?}");
    // Park a poll with a long timeout, then ring: the poll returns at once with the call.
    let polls = sim.counters()["polls"].as_u64().unwrap();
    let parked = {
        let (http, url, token) = (c.http.clone(), format!("{}{next}&timeout=60", c.origin), c.token.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() })
    };
    // Ordered by the pool's poll counter, not by a sleep: the poll has arrived, and is held.
    eventually("the poll is held", || sim.counters()["polls"].as_u64().unwrap() > polls).await;
    assert!(!parked.is_finished(), "with nothing to say, the pool holds the poll");
    let call = sim.start_call(CallSpec { ring_ms: Some(3_600_000), ..CallSpec::default() }).unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), parked).await.expect("the held poll is released").unwrap();
    let first = &batch["sender"][0]["events"][0];
    assert_eq!((first["link"]["rel"].as_str(), first["type"].as_str()), (Some("conversation"), Some("added")));
    let conv = first["link"]["href"].as_str().unwrap().to_string();
    assert_eq!(c.get(&conv).await.json::<Value>().await.unwrap()["state"], "Incoming");
    let inv_event = &batch["sender"][0]["events"][1];
    assert_eq!(inv_event["_embedded"]["audioVideoInvitation"]["direction"], "Incoming");
    // Answer it as a client does, then hang up through the control API.
    let accept = inv_event["_embedded"]["audioVideoInvitation"]["_links"]["acceptWithAnswer"]["href"].as_str().unwrap();
    assert_eq!(c.post(accept, json!({})).await.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "the answer is an SDP, not JSON");
    let sdp = c.http.post(format!("{}{accept}", c.origin)).bearer_auth(&c.token).header("Content-Type", "application/sdp").body("v=0\r\n");
    assert_eq!(sdp.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let next = batch["_links"]["next"]["href"].as_str().unwrap().to_string();
    let (answered, next) = c.events(next, 5).await;
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(
        answered,
        pairs(&[
            ("audioVideoInvitation", "completed"),
            ("audioVideoSession", "added"),
            ("audioVideo", "updated"),
            ("conversation", "updated"),
            ("audioVideoSession", "updated"),
        ])
    );
    let session: Value = c.get(&format!("{conv}/audioVideo/audioVideoSession")).await.json().await.unwrap();
    assert_eq!(session["state"], "Established");
    assert!(sim.end_call(call));
    let (ended, _) = c.events(next, 3).await;
    assert_eq!(ended, pairs(&[("audioVideoSession", "deleted"), ("audioVideo", "updated"), ("conversation", "deleted")]));
    assert_eq!(c.get(&conv).await.status(), StatusCode::NOT_FOUND, "resources go with the call");
}

#[tokio::test]
async fn a_missed_call_has_no_session() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, true).await;
    let (_, next) = c.events(c.events.clone(), 5).await;
    sim.start_call(CallSpec { outcome: CallOutcome::Missed, ring_ms: Some(10), ..CallSpec::default() }).unwrap();
    let mut href = next;
    let mut events = Vec::new();
    while events.len() < 6 {
        let b = c.poll(&href).await;
        for s in b["sender"].as_array().into_iter().flatten() {
            events.extend(s["events"].as_array().unwrap().iter().cloned());
        }
        href = b["_links"]["next"]["href"].as_str().unwrap().to_string();
    }
    let completed = events.iter().find(|e| e["type"] == "completed").unwrap();
    assert_eq!(completed["status"], "Failure");
    assert_eq!(completed["reason"]["subcode"], "Missed");
    assert!(events.iter().all(|e| e["link"]["rel"] != "audioVideoSession"));
    assert_eq!(events.last().unwrap()["type"], "deleted");
}

#[tokio::test(start_paused = true)]
async fn idle_applications_expire() {
    let sim = start_sim(SimConfig { app_idle_timeout: Duration::from_secs(60), ..sim_config() }).await;
    let c = client(&sim, false).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    let r = c.get(&c.events).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.counters()["applications_expired"], 1);
}

#[tokio::test]
async fn faults_and_gzip() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, false).await;
    let control = format!("{}/sim/v1/faults", sim.origin());
    let inject = |body: Value| c.http.post(&control).json(&body).send();
    assert_eq!(inject(json!({"kind": "server_error", "status": 503, "retry_after": 7})).await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = c.get(&c.events).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "7");
    inject(json!({"kind": "malformed_body"})).await.unwrap();
    assert!(serde_json::from_slice::<Value>(&c.get(&c.events).await.bytes().await.unwrap()).is_err());
    inject(json!({"kind": "drop_connection"})).await.unwrap();
    let dropped = c.http.get(format!("{}{}", c.origin, c.events)).bearer_auth(&c.token).send().await;
    assert!(dropped.is_err() || dropped.unwrap().bytes().await.is_err(), "the connection is cut off");
    inject(json!({"kind": "resync"})).await.unwrap();
    assert!(c.poll(&c.events).await["_links"]["resync"].is_object());
    let bad = inject(json!({"kind": "meteor"})).await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    for status in [99, 200, 429, 700] {
        let bad = inject(json!({"kind": "server_error", "status": status})).await.unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "status {status}");
        assert!(bad.text().await.unwrap().contains("500 to 599"));
    }
    let call = c.http.post(format!("{}/sim/v1/calls", sim.origin())).json(&json!([])).send().await.unwrap();
    assert_eq!(call.status(), StatusCode::BAD_REQUEST, "a list is not a call spec");
    // gzip when asked, with Content-Length.
    let raw = Client::builder().no_gzip().build().unwrap();
    let r = raw.get(format!("{}{}", c.origin, c.app)).bearer_auth(&c.token).header("Accept-Encoding", "gzip").send().await.unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), len);
    inject(json!({"kind": "application_gone"})).await.unwrap();
    assert_eq!(c.get(&c.app).await.status(), StatusCode::NOT_FOUND);
    inject(json!({"kind": "token_expiry"})).await.unwrap();
    assert_eq!(c.get(&c.app).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn outgoing_calls_through_start_audio_video() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, true).await;
    let app: Value = c.get(&c.app).await.json().await.unwrap();
    let start = app["_embedded"]["communication"]["_links"]["startAudioVideo"]["href"].as_str().unwrap();
    let r = c.post(start, json!({"to": "sip:bob@contoso.com", "operationId": "op-1"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let inv: Value = r.json().await.unwrap();
    assert_eq!(inv["direction"], "Outgoing");
    assert_eq!(inv["operationId"], "op-1");
    let calls: Value = c.http.get(format!("{}/sim/v1/calls", sim.origin())).send().await.unwrap().json().await.unwrap();
    assert_eq!(calls[0]["remote"], "sip:bob@contoso.com");
    // The callee answers: the invitation completes and a session starts.
    let (seen, next) = until_event(&c, c.events.clone(), ("audioVideoSession", "updated")).await;
    let pos = |rel: &str, kind: &str| seen.iter().position(|(r, k)| r == rel && k == kind).unwrap_or_else(|| panic!("no {rel} {kind} in {seen:?}"));
    assert!(pos("audioVideoInvitation", "started") < pos("audioVideoInvitation", "completed"), "{seen:?}");
    assert!(pos("audioVideoInvitation", "completed") < pos("audioVideoSession", "added"), "{seen:?}");
    // stopAudioVideo on the call's audioVideo hangs up: the session goes.
    let conversation =
        calls[0]["conversation"].as_str().map(str::to_string).unwrap_or_else(|| inv["_links"]["conversation"]["href"].as_str().unwrap().to_string());
    let r = c.post(&format!("{conversation}/audioVideo/stopAudioVideo"), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (seen, _) = until_event(&c, next, ("audioVideoSession", "deleted")).await;
    assert!(seen.contains(&("audioVideoSession".to_string(), "deleted".to_string())));
}

/// Polls from `href` until an event `want` (rel, type) arrives: what came, and the next href.
async fn until_event(c: &Ucwa, mut href: String, want: (&str, &str)) -> (Vec<(String, String)>, String) {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let (got, next) = c.events(href, 1).await;
        href = next;
        let done = got.iter().any(|(r, k)| r == want.0 && k == want.1);
        seen.extend(got);
        if done {
            return (seen, href);
        }
    }
    panic!("no {want:?} in {seen:?}");
}

/// Top-level keys, `_links` names and `_embedded` names of a resource.
fn shape(v: &Value) -> std::collections::BTreeSet<String> {
    let mut keys: std::collections::BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
    for part in ["_links", "_embedded"] {
        if let Some(o) = v[part].as_object() {
            keys.extend(o.keys().map(|k| format!("{part}.{k}")));
        }
    }
    keys
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read(format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::from_slice(text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text)).unwrap()
}

#[tokio::test]
async fn resources_have_the_documented_shape() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, true).await;
    let app: Value = c.get(&c.app).await.json().await.unwrap();
    let missing: Vec<_> = shape(&fixture("resources/application-201.json")).difference(&shape(&app)).cloned().collect();
    assert!(missing.is_empty(), "the application lacks {missing:?}: {app}");
    let call = sim.start_call(CallSpec { ring_ms: Some(5), ..CallSpec::default() }).unwrap();
    let (_, _) = c.events(c.events.clone(), 1).await;
    let session_href = format!("{}/communication/conversations/{call}/audioVideo/audioVideoSession", c.app);
    let mut session = Value::Null;
    for _ in 0..200 {
        let r = c.get(&session_href).await;
        if r.status() == StatusCode::OK {
            session = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let missing: Vec<_> = shape(&fixture("resources/audioVideoSession.json")).difference(&shape(&session)).cloned().collect();
    assert!(missing.is_empty(), "the session lacks {missing:?}: {session}");
}

#[tokio::test]
async fn the_token_endpoint_takes_a_multipart_grant() {
    let sim = start_sim(sim_config()).await;
    let part = |name: &str, value: &str| format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
    let body = format!("{}{}{}--XyZ--\r\n", part("grant_type", "password"), part("username", "demo@contoso.com"), part("password", "demo"));
    let r = Client::new()
        .post(format!("{}/WebTicket/oauthtoken", sim.origin()))
        .header("Content-Type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert!(t["access_token"].as_str().is_some_and(|s| !s.is_empty()), "{t}");
}

#[tokio::test]
async fn an_outgoing_call_cancelled_while_ringing_ends_its_invitation() {
    let sim = start_sim(SimConfig { ring_time: Duration::from_secs(3600), ..sim_config() }).await;
    let c = client(&sim, true).await;
    let app: Value = c.get(&c.app).await.json().await.unwrap();
    let start = app["_embedded"]["communication"]["_links"]["startAudioVideo"]["href"].as_str().unwrap();
    let inv: Value = c.post(start, json!({"to": "sip:bob@contoso.com"})).await.json().await.unwrap();
    let cancel = inv["_links"]["cancel"]["href"].as_str().unwrap_or_else(|| panic!("a ringing outgoing call offers cancel: {inv}"));
    assert_eq!(c.post(cancel, json!({})).await.status(), StatusCode::NO_CONTENT);
    let (seen, _) = until_event(&c, c.events.clone(), ("audioVideoInvitation", "completed")).await;
    assert!(!seen.iter().any(|(r, _)| r == "audioVideoSession"), "no session for a cancelled call: {seen:?}");
    let counters = sim.counters();
    assert_eq!(counters["calls_ended"], 1, "{counters}");
}

/// Every href in `v` (links, and `href` members anywhere), relative to the pool.
fn hrefs(v: &Value, out: &mut Vec<(String, String)>, rel: &str) {
    match v {
        Value::Object(o) => {
            for (k, m) in o {
                if k == "href" {
                    if let Some(h) = m.as_str() {
                        out.push((rel.to_string(), h.to_string()));
                    }
                } else {
                    hrefs(m, out, if rel.is_empty() || k.starts_with('_') { k } else { rel });
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| hrefs(i, out, rel)),
        _ => {}
    }
}

#[tokio::test]
async fn every_link_the_simulator_hands_out_answers() {
    walk_every_link(sim_config()).await;
}

#[tokio::test]
async fn every_link_the_simulator_hands_out_answers_with_every_quirk_on() {
    use clap::ValueEnum;
    use ucwa_agent::sim::Quirk;
    // (Without `me` nothing can ring; a poll without the events key is refused: both tested apart.)
    let all = Quirk::value_variants().iter().copied().filter(|q| !matches!(q, Quirk::NoMe | Quirk::EventsKey));
    walk_every_link(SimConfig { quirks: all.collect(), ..sim_config() }).await;
}

/// docs/SIMULATOR.md: it never advertises a link it cannot serve. Walked, not listed:
/// a link added tomorrow is covered the day it appears.
async fn walk_every_link(config: SimConfig) {
    let sim = start_sim(config).await;
    let c = client(&sim, true).await;
    let ringing = sim.start_call(CallSpec { outcome: CallOutcome::WaitForAccept, ..CallSpec::default() }).unwrap();
    let answered = sim.start_call(CallSpec { ring_ms: Some(5), ..CallSpec::default() }).unwrap();
    let (_, _) = c.events(c.events.clone(), 1).await;
    let mut queue: Vec<(String, String)> = vec![("application".into(), c.app.clone()), ("discovery".into(), "/".into())];
    for call in [ringing, answered] {
        queue.push(("conversation".into(), format!("{}/communication/conversations/{call}", c.app)));
    }
    // The invitations, from the live call list.
    let calls: Value = reqwest::get(format!("{}/sim/v1/calls", sim.origin())).await.unwrap().json().await.unwrap();
    for call in calls.as_array().unwrap() {
        queue.push(("invitation".into(), call["invitation"].as_str().unwrap().to_string()));
    }
    // Messaging conversations: one the account starts (no first message), one it is invited to.
    let out = c.post(&format!("{}/communication/messagingInvitations", c.app), json!({"to": "sip:bob@contoso.com"})).await;
    assert_eq!(out.status(), StatusCode::CREATED);
    let out: Value = out.json().await.unwrap();
    queue.push(("messagingInvitation".into(), out["_links"]["self"]["href"].as_str().unwrap().to_string()));
    let incoming: Value = sim_post(&sim, "messages", json!({"from": "sip:ann@fabrikam.com", "to": "sip:demo@contoso.com", "text": "hi"})).await;
    for rel in ["conversation", "invitation"] {
        queue.push((rel.into(), incoming[rel].as_str().unwrap().to_string()));
    }
    let session = format!("{}/communication/conversations/{answered}/audioVideo/audioVideoSession", c.app);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while c.get(&session).await.status() != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the answered call's session never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    let mut walked = 0;
    while let Some((rel, href)) = queue.pop() {
        // (The event channel is a held GET, tested on its own; a data: URI is the SDP offer.)
        if href.starts_with("data:") || href.contains("/events?") || !seen.insert(href.clone()) {
            continue;
        }
        let path = href.trim_start_matches(sim.origin()).to_string();
        if !path.starts_with('/') {
            continue;
        }
        walked += 1;
        let r = c.get(&path).await;
        let status = r.status();
        // An operation (makeMeAvailable, decline, …) answers 405 to a GET; what is 404 or 5xx
        // was advertised without being served.
        if status == StatusCode::NOT_FOUND || status.is_server_error() {
            failures.push(format!("{rel} {path}: {status}"));
            continue;
        }
        let is_json = r.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"));
        if status == StatusCode::OK && is_json {
            let body: Value = r.json().await.unwrap();
            let mut found = Vec::new();
            hrefs(&body, &mut found, "");
            queue.extend(found);
        }
    }
    assert!(walked > 20, "walked {walked} hrefs");
    assert!(failures.is_empty(), "{} advertised hrefs are not served:\n{}", failures.len(), failures.join("\n"));
}

/// `POST /sim/v1/<path>` with a JSON body: the answer's body.
async fn sim_put(sim: &Simulator, path: &str, body: Value) {
    let r = Client::new().put(format!("{}/sim/v1/{path}", sim.origin())).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "PUT {path}");
}

async fn sim_post(sim: &Simulator, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}/sim/v1/{path}", sim.origin())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "POST /sim/v1/{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

async fn sim_get(sim: &Simulator, path: &str) -> Value {
    reqwest::get(format!("{}/sim/v1/{path}", sim.origin())).await.unwrap().json().await.unwrap()
}

/// Polls from `href` until an event `want` (rel, type) arrives: every event object that came, and the next href.
async fn until_raw(c: &Ucwa, mut href: String, want: (&str, &str)) -> (Vec<Value>, String) {
    let mut seen = Vec::new();
    for _ in 0..50 {
        let b = c.poll(&href).await;
        href = b["_links"]["next"]["href"].as_str().unwrap().to_string();
        for s in b["sender"].as_array().unwrap() {
            seen.extend(s["events"].as_array().unwrap().iter().cloned());
        }
        if seen.iter().any(|e| e["link"]["rel"] == want.0 && e["type"] == want.1) {
            return (seen, href);
        }
    }
    panic!("no {want:?} in {seen:?}");
}

/// `resource` has every property, link and embedded member the documentation's sample event
/// (`tests/fixtures/events/<file>`, copied from the UCWA docs) embeds for `rel`.
fn like_the_sample(resource: &Value, file: &str, rel: &str) {
    let sample = fixture(&format!("events/{file}"));
    let expected = &sample["sender"][0]["events"][0]["_embedded"][rel];
    let missing: Vec<_> = shape(expected).difference(&shape(resource)).cloned().collect();
    assert!(missing.is_empty(), "{rel} lacks {missing:?} of {file}: {resource}");
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| format!("{} {}", e["link"]["rel"].as_str().unwrap(), e["type"].as_str().unwrap())).collect()
}

#[tokio::test]
async fn messaging_both_ways_as_the_documentation_shows() {
    let sim = start_sim(sim_config()).await;
    let c = client(&sim, true).await;
    let (_, mut next) = c.events(c.events.clone(), 1).await;
    // startMessaging without a first message: a connected conversation, and no message event.
    let r = c.post(&format!("{}/communication/messagingInvitations", c.app), json!({"to": "sip:bob@contoso.com", "operationId": "op"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let inv: Value = r.json().await.unwrap();
    let (seen, n) = until_raw(&c, next, ("messagingInvitation", "completed")).await;
    next = n;
    assert_eq!(
        kinds(&seen),
        ["conversation added", "messagingInvitation started", "messaging updated", "conversation updated", "messagingInvitation completed"]
    );
    let messaging: Value = c.get(inv["_links"]["messaging"]["href"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(messaging["state"], "Connected");
    for rel in ["self", "conversation"] {
        assert_eq!(c.get(inv["_links"][rel]["href"].as_str().unwrap()).await.status(), StatusCode::OK, "{rel}");
    }
    // sendMessage: the message completes with `_embedded.message`.
    let send = messaging["_links"]["sendMessage"]["href"].as_str().unwrap();
    let r = c
        .http
        .post(format!("{}{send}", c.origin))
        .bearer_auth(&c.token)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body("hello there")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (seen, n) = until_raw(&c, next, ("message", "completed")).await;
    next = n;
    let m = &seen.last().unwrap()["_embedded"]["message"];
    assert_eq!((m["direction"].as_str(), m["_links"]["plainMessage"]["href"].as_str()), (Some("Outgoing"), Some("data:text/plain;charset=utf-8,hello+there")));
    like_the_sample(m, "doc-SendAnIM-03.json", "message");
    // A first message inline, `+` as space: the record has the spaces.
    let r = c
        .post(
            &format!("{}/communication/messagingInvitations", c.app),
            json!({"to": "sip:eve@contoso.com", "_links": {"message": {"href": "data:text/plain,hello+from+bot"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (seen, n) = until_raw(&c, next, ("message", "completed")).await;
    next = n;
    assert!(seen.last().unwrap()["_embedded"]["message"].is_object(), "{seen:?}");
    let record = sim_get(&sim, "messages").await;
    let texts: Vec<&str> = record.as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello there", "hello from bot"]);

    // Incoming: an invitation with the first message, accept, then the message arrives.
    let got = sim_post(&sim, "messages", json!({"from": "sip:ann@fabrikam.com", "to": "sip:demo@contoso.com", "text": "status please"})).await;
    let (seen, n) = until_raw(&c, next, ("messagingInvitation", "started")).await;
    next = n;
    let invitation = &seen.iter().find(|e| e["link"]["rel"] == "messagingInvitation").unwrap()["_embedded"]["messagingInvitation"];
    assert_eq!(invitation["direction"], "Incoming");
    like_the_sample(invitation, "doc-ReceiveAnIM-04.json", "messagingInvitation");
    assert_eq!(invitation["_embedded"]["from"]["uri"], "sip:ann@fabrikam.com");
    assert_eq!(invitation["_links"]["message"]["href"], "data:text/plain;charset=utf-8,status+please");
    assert_eq!(invitation["_links"]["conversation"]["href"], got["conversation"]);
    let r = c.post(invitation["_links"]["accept"]["href"].as_str().unwrap(), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (seen, n) = until_raw(&c, next, ("message", "completed")).await;
    next = n;
    assert!(kinds(&seen).contains(&"messagingInvitation completed".to_string()), "{seen:?}");
    let m = &seen.last().unwrap()["_embedded"]["message"];
    assert_eq!(m["direction"], "Incoming");
    like_the_sample(m, "doc-ReceiveAnIM-06.json", "message");
    assert_eq!(m["_links"]["plainMessage"]["href"], "data:text/plain;charset=utf-8,status+please");
    // Ann writes again: the same conversation.
    let again = sim_post(&sim, "messages", json!({"from": "sip:ann@fabrikam.com", "to": "sip:demo@contoso.com", "text": "anyone?"})).await;
    assert_eq!(again["conversation"], got["conversation"]);
    let (_, n) = until_raw(&c, next, ("message", "completed")).await;
    next = n;
    // stopMessaging ends it: its links stop answering.
    let conv = got["conversation"].as_str().unwrap();
    let messaging: Value = c.get(&format!("{conv}/messaging")).await.json().await.unwrap();
    assert_eq!(c.post(messaging["_links"]["stopMessaging"]["href"].as_str().unwrap(), json!({})).await.status(), StatusCode::NO_CONTENT);
    let (_, n) = until_raw(&c, next, ("conversation", "deleted")).await;
    next = n;
    assert_eq!(c.get(conv).await.status(), StatusCode::NOT_FOUND);

    // Declined: the invitation fails and the control API lists the conversation as declined.
    let carl = sim_post(&sim, "messages", json!({"from": "sip:carl@fabrikam.com", "to": "sip:demo@contoso.com", "text": "hi"})).await;
    let inv: Value = c.get(carl["invitation"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(c.post(inv["_links"]["decline"]["href"].as_str().unwrap(), json!({})).await.status(), StatusCode::NO_CONTENT);
    let (seen, _) = until_raw(&c, next, ("messagingInvitation", "completed")).await;
    let done = seen.iter().rev().find(|e| e["link"]["rel"] == "messagingInvitation").unwrap();
    assert_eq!((done["status"].as_str(), done["reason"]["subcode"].as_str()), (Some("Failure"), Some("Declined")));
    let convs = sim_get(&sim, "conversations").await;
    let state = |remote: &str| convs.as_array().unwrap().iter().find(|c| c["remote"] == remote).map(|c| c["state"].clone());
    assert_eq!(state("sip:carl@fabrikam.com"), Some(json!("Declined")));
    assert_eq!(state("sip:ann@fabrikam.com"), Some(json!("Ended")));
    // Nobody available: refused, naming why.
    let r = reqwest::Client::new()
        .post(format!("{}/sim/v1/messages", sim.origin()))
        .json(&json!({"from": "sip:x@fabrikam.com", "to": "sip:nobody@contoso.com", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ended_calls_stay_listed_with_their_outcome() {
    let sim = start_sim(sim_config()).await;
    let _c = client(&sim, true).await;
    let wait = || CallSpec { outcome: CallOutcome::WaitForAccept, ..CallSpec::default() };
    let declined = sim.start_call(wait()).unwrap();
    let cancelled = sim.start_call(wait()).unwrap();
    let missed = sim.start_call(CallSpec { outcome: CallOutcome::Missed, ring_ms: Some(5), ..CallSpec::default() }).unwrap();
    let answered = sim.start_call(CallSpec { ring_ms: Some(5), duration_ms: Some(20), ..CallSpec::default() }).unwrap();
    sim_post(&sim, &format!("calls/{declined}/decline"), json!({})).await;
    assert!(sim.end_call(cancelled));
    let outcome_of = |calls: &Value, id: u64| calls.as_array().unwrap().iter().find(|c| c["id"] == id).map(|c| c["outcome"].clone());
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let calls = sim_get(&sim, "calls").await;
        let got: Vec<Option<Value>> = [declined, cancelled, missed, answered].iter().map(|id| outcome_of(&calls, *id)).collect();
        if got == [Some(json!("declined")), Some(json!("cancelled")), Some(json!("missed")), Some(json!("answered"))] {
            assert!(calls.as_array().unwrap().iter().all(|c| c["phase"] == "Ended"), "{calls}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "outcomes: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn presence_subscriptions_as_the_documentation_shows() {
    // A subscription minute of 60 ms: 10 minutes last 0.6 s, the warning at 0.4 s.
    let sim = start_sim(SimConfig { presence_minute: Duration::from_millis(60), ..sim_config() }).await;
    let c = client(&sim, true).await;
    let (_, mut next) = c.events(c.events.clone(), 1).await;
    let people: Value = c.get(&format!("{}/people", c.app)).await.json().await.unwrap();
    let subs = people["_links"]["presenceSubscriptions"]["href"].as_str().unwrap().to_string();
    for bad in [json!({"duration": 5, "uris": ["sip:bob@contoso.com"]}), json!({"duration": 10, "uris": ["bob"]}), json!({"duration": 10})] {
        assert_eq!(c.post(&subs, bad.clone()).await.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // The docs' own request (`Uris` capitalised): 201 a presenceSubscription like theirs.
    let r = c.post(&subs, json!({"duration": 11, "Uris": ["sip:SaraD@contoso.com"]})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sub: Value = r.json().await.unwrap();
    like_the_sample(&sub, "doc-ExtendAPresenceSubscription-01.json", "presenceSubscription");
    let (seen, n) = until_raw(&c, next, ("contactPresence", "updated")).await;
    next = n;
    assert_eq!(kinds(&seen), ["contact added", "presenceSubscription added", "contactPresence updated"]);
    // A change of the contact's presence: `contactPresence` `updated`, shaped as the docs'.
    sim_put(&sim, "contacts/sip:sarad@contoso.com/presence", json!({"availability": "Busy"})).await;
    let (seen, n) = until_raw(&c, next, ("contactPresence", "updated")).await;
    next = n;
    let sample = fixture("events/doc-SubscribeToThePresenceOfSelectedContacts-01.json");
    let expected = &sample["sender"][0]["events"][0];
    let event = seen.last().unwrap();
    assert_eq!(shape(event), shape(expected), "{event}");
    assert_eq!(event["in"]["rel"], "contact");
    let presence: Value = c.get(event["link"]["href"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(presence["availability"], "Busy");
    // About to expire: `presenceSubscription` `updated` embedding it; extended, it lives on.
    let (seen, n) = until_raw(&c, next, ("presenceSubscription", "updated")).await;
    next = n;
    like_the_sample(&seen.last().unwrap()["_embedded"]["presenceSubscription"], "doc-ExtendAPresenceSubscription-01.json", "presenceSubscription");
    let me = sub["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(c.post(&format!("{me}?duration=10"), json!({})).await.status(), StatusCode::OK);
    // Memberships: added, listed, removed.
    let add = sub["_links"]["addToPresenceSubscription"]["href"].as_str().unwrap();
    assert_eq!(c.post(add, json!({"contactUris": ["sip:bob@contoso.com"]})).await.status(), StatusCode::CREATED);
    let list: Value = c.get(sub["_links"]["memberships"]["href"].as_str().unwrap()).await.json().await.unwrap();
    let members = list["_embedded"]["presenceSubscriptionMembership"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{list}");
    let bob = members.iter().find(|m| m["_links"]["contact"]["href"].as_str().unwrap().ends_with("/bob@contoso.com")).unwrap();
    let r = c.http.delete(format!("{}{}", c.origin, bob["_links"]["self"]["href"].as_str().unwrap())).bearer_auth(&c.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim_get(&sim, "presence_subscriptions").await[0]["uris"], json!(["sip:sarad@contoso.com"]));
    // Not extended again: it expires with the docs' deleted events; extending it is then a 404.
    let (seen, _) = until_raw(&c, next, ("presenceSubscription", "deleted")).await;
    let last_two: Vec<String> = kinds(&seen).into_iter().rev().take(2).collect();
    assert_eq!(last_two, ["presenceSubscription deleted", "contact deleted"], "as doc-DeleteAPresenceSubscription-01: {seen:?}");
    let sample = fixture("events/doc-DeleteAPresenceSubscription-01.json");
    assert_eq!(shape(&seen[seen.len() - 2]), shape(&sample["sender"][0]["events"][0]));
    assert_eq!(c.post(&format!("{me}?duration=10"), json!({})).await.status(), StatusCode::NOT_FOUND);
    let counters = sim.counters();
    assert_eq!((counters["presence_subscriptions_extended"].as_u64(), counters["presence_subscriptions_expired"].as_u64()), (Some(1), Some(1)));
    assert!(sim_get(&sim, "presence_subscriptions").await.as_array().unwrap().is_empty());
}
