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

#[tokio::test(start_paused = true)]
async fn channel_backoff_grows_exponentially_and_is_capped() {
    use std::sync::Arc;
    use ucwa_agent::agent::channel::{self, ChannelSettings};
    use ucwa_agent::agent::sink::EventSink;
    use ucwa_agent::metrics::Metrics;
    use ucwa_agent::script::{Limits, ScriptHost};
    use ucwa_agent::sim::Fault;
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
    // Six failures in a row, then the channel works: delays 0.5, 1, 2, 4, 4, 4 s (cap 4 s),
    // each jittered into [d/2, d].
    sim.inject(Fault::ServerError { status: 503, retry_after: None }, 6);
    let settings = ChannelSettings { poll_timeout: Duration::from_secs(180), max_backoff: Duration::from_secs(4) };
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let session = signed.session.clone();
    let metrics = Metrics::default();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        channel::run(&session, app.events_href.clone(), &settings, &mut sink, &mut stop, &metrics).await.unwrap();
    });
    let polls = || sim.counters()["polls"].as_u64().unwrap();
    while polls() < 7 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(7750) && took <= Duration::from_millis(15_600), "the seventh poll came after {took:?}");
    assert_eq!(sim.counters()["faults_applied"], 6);
    let _ = stop_tx.send(true);
    task.await.unwrap();
}
