//! Token renewal timing on tokio's paused clock: the simulator and the session share one
//! runtime whose clock only moves when told (or when everything is idle), so an 8-hour token
//! lifetime is crossed without waiting.

mod common;

use common::*;
use std::time::Duration;
use ucwa_agent::sim::{SimConfig, DEMO_PASSWORD, DEMO_USER};
use ucwa_agent::ucwa::signin::sign_in;
use ucwa_agent::ucwa::{session::http_client, Auth, Secret};

#[tokio::test(start_paused = true)]
async fn tokens_renew_shortly_before_expires_in_and_not_before() {
    let sim = start_sim(SimConfig { token_lifetime: Duration::from_secs(8 * 3600), ..sim_config() }).await;
    let auth = Auth::Password { username: DEMO_USER.into(), password: Secret::new(DEMO_PASSWORD) };
    let discover = url::Url::parse(&sim.discovery_url()).unwrap();
    let signed = sign_in(&http_client(None).unwrap(), &discover, &auth, None).await.unwrap();
    let issued = || sim.counters()["tokens_issued"].as_u64().unwrap();
    assert_eq!(issued(), 1);
    // 8 h lifetime: renewal is due a minute before it runs out.
    tokio::time::advance(Duration::from_secs(8 * 3600 - 61)).await;
    signed.session.get_json(&signed.applications_href.replace("applications", "applications/1")).await.ok();
    assert_eq!(issued(), 1, "still valid: no renewal");
    tokio::time::advance(Duration::from_secs(2)).await;
    signed.session.get_json(&signed.applications_href.replace("applications", "applications/1")).await.ok();
    assert_eq!(issued(), 2, "renewed before expiry");
    assert_eq!(sim.counters()["unauthorized"], 1, "only the first challenge: no request went out with an expired token");
}

/// The channel loop alone against the simulator, on the paused clock: `faults` are injected,
/// then the loop runs until the simulator has seen `polls` polls. Returns when each poll came
/// (virtual time since the start) and the metrics text.
async fn channel_with_faults(faults: &[(ucwa_agent::sim::Fault, usize)], polls: u64, max_backoff: Duration) -> (Vec<Duration>, String) {
    use std::sync::Arc;
    use ucwa_agent::agent::channel::{self, ChannelSettings};
    use ucwa_agent::agent::sink::EventSink;
    use ucwa_agent::metrics::Metrics;
    use ucwa_agent::script::{Limits, ScriptHost};
    use ucwa_agent::store::Store;
    use ucwa_agent::ucwa::application;

    let sim = start_sim(sim_config()).await;
    let auth = Auth::Password { username: DEMO_USER.into(), password: Secret::new(DEMO_PASSWORD) };
    let discover = url::Url::parse(&sim.discovery_url()).unwrap();
    let signed = sign_in(&http_client(None).unwrap(), &discover, &auth, None).await.unwrap();
    let app = application::create(&signed.session, &signed.applications_href, "test", "e1").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::in_memory());
    let mut sink = EventSink::new(ScriptHost::new(dir.path().to_path_buf(), Limits::default()), store, 1000);
    for (fault, n) in faults {
        sim.inject(fault.clone(), *n);
    }
    let settings = ChannelSettings { poll_timeout: Duration::from_secs(180), max_backoff };
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let session = signed.session.clone();
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        channel::run(&session, app.events_href.clone(), &settings, &mut sink, &mut stop, &m).await.unwrap();
    });
    let count = || sim.counters()["polls"].as_u64().unwrap();
    let mut at = Vec::new();
    // Virtual time: a regression fails at this deadline instead of spinning for ever.
    let deadline = started + Duration::from_secs(600);
    while at.len() < polls as usize {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {polls} polls within 600 virtual seconds", at.len());
        while (at.len() as u64) < count() {
            at.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied: usize = faults.iter().map(|(_, n)| n).sum();
    assert_eq!(sim.counters()["faults_applied"], applied as u64);
    let _ = stop_tx.send(true);
    task.await.unwrap();
    (at, metrics.render(None))
}

/// `ucwa_recoveries_total{kind}` in a metrics text.
fn recoveries(text: &str, kind: &str) -> u64 {
    let prefix = format!("ucwa_recoveries_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn channel_backoff_grows_exponentially_and_is_capped() {
    use ucwa_agent::sim::Fault;
    // Six failures in a row, then the channel works: delays 0.5, 1, 2, 4, 4, 4 s (cap 4 s),
    // each jittered into [d/2, d].
    let (at, text) = channel_with_faults(&[(Fault::ServerError { status: 503, retry_after: None }, 6)], 7, Duration::from_secs(4)).await;
    let took = at[6];
    assert!(took >= Duration::from_millis(7750) && took <= Duration::from_millis(15_600), "the seventh poll came after {took:?}");
    assert_eq!(recoveries(&text, "server_error"), 6);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_429_is_told_from_5xx() {
    use ucwa_agent::sim::Fault;
    // Backoff alone would wait at most 1 s; the server asks for 20 s, then 30 s.
    let faults = [(Fault::ServerError { status: 503, retry_after: Some(20) }, 1), (Fault::TooManyRequests { retry_after: Some(30) }, 1)];
    let (at, text) = channel_with_faults(&faults, 3, Duration::from_secs(1)).await;
    let (first, second) = (at[1] - at[0], at[2] - at[1]);
    assert!(first >= Duration::from_secs(20) && first < Duration::from_secs(21), "after the 503: {first:?}");
    assert!(second >= Duration::from_secs(30) && second < Duration::from_secs(31), "after the 429: {second:?}");
    assert_eq!((recoveries(&text, "server_error"), recoveries(&text, "throttled")), (1, 1), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_for_accept_call_rings_until_answered_or_two_minutes() {
    use ucwa_agent::sim::{CallOutcome, CallSpec};
    use ucwa_agent::ucwa::application;
    let sim = start_sim(sim_config()).await;
    let auth = Auth::Password { username: DEMO_USER.into(), password: Secret::new(DEMO_PASSWORD) };
    let discover = url::Url::parse(&sim.discovery_url()).unwrap();
    let signed = sign_in(&http_client(None).unwrap(), &discover, &auth, None).await.unwrap();
    let app = application::create(&signed.session, &signed.applications_href, "test", "e1").await.unwrap();
    application::make_me_available(&signed.session, &app, &["Audio".to_string()]).await.unwrap();
    let control = format!("{}/sim/v1/calls", sim.origin());
    let http = reqwest::Client::new();
    let waiting = || CallSpec { outcome: CallOutcome::WaitForAccept, ..CallSpec::default() };

    // Long past the simulator's ring time (2 s), the call still waits for an answer.
    let call = sim.start_call(waiting()).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await; // (the call's task starts its clock)
    tokio::time::advance(Duration::from_secs(99)).await;
    let r = http.post(format!("{control}/{call}/accept")).send().await.unwrap();
    assert_eq!(r.status(), 204, "accepted after 100 s of ringing");

    // Unanswered, it is missed at the stated maximum: the control API no longer knows it.
    let call = sim.start_call(waiting()).unwrap();
    tokio::time::advance(Duration::from_secs(1)).await; // (the call's task starts its clock)
    tokio::time::advance(Duration::from_secs(120)).await;
    let r = http.post(format!("{control}/{call}/accept")).send().await.unwrap();
    assert_eq!(r.status(), 404, "missed after two minutes");
}
