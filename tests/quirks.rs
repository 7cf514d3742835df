//! What real pools send (docs/SIMULATOR.md, Quirks): the agent against each quirk the
//! simulator can switch on, and a new application announced to scripts.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::{Fault, Quirk, Quirks, SimConfig};

fn quirky(q: &[Quirk]) -> SimConfig {
    SimConfig { quirks: q.iter().copied().collect::<Quirks>(), ..sim_config() }
}

/// Reads the caller, the participant href and the conversation's `created` whatever their shape.
const READER: &str = r#"
agent.on("audioVideoInvitation", "started", function(e)
  local from = agent.ucwa.one(e.resource._embedded.from)
  agent.log.info("from", { uri = from.uri, link = e.resource._links.from.href, revision = e.resource._links.self.revision })
end)
agent.on("conversation", "added", function(e)
  local created = agent.ucwa.date(e.resource.created)
  agent.log.info("created", { ms = created, ago_ms = created and (agent.now() - created) })
end)
agent.on("audioVideoSession", function(e) agent.log.info("session " .. e.type) end)
"#;

/// One answered call through READER; its log lines' fields.
async fn read_one_call(q: &[Quirk]) -> Vec<Value> {
    let sim = start_sim(quirky(q)).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "reader.lua", READER);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let call = sim.start_call(answered_call()).unwrap();
    let mut fields = Vec::new();
    while fields.len() < 4 {
        let o = expect(
            &mut agent.out,
            "the reader's lines",
            |o| matches!(o, ScriptOutput::Log { script, .. } | ScriptOutput::HandlerError { script, .. } if script == "reader"),
        )
        .await;
        match o {
            ScriptOutput::Log { message, fields: f, .. } => fields.push(json!({"message": message, "fields": f})),
            other => panic!("the reader failed with quirks {q:?}: {other:?}"),
        }
    }
    sim.end_call(call);
    assert_eq!(messages_of(&mut agent.out, "reader", 1).await, ["session deleted"]);
    agent.stop().await;
    fields
}

#[tokio::test]
async fn shapes_seen_in_captures_read_the_same_as_the_documented_ones() {
    let documented = read_one_call(&[]).await;
    let captured = read_one_call(&[Quirk::EmbeddedArrays, Quirk::OpaqueParticipantIds, Quirk::LinkRevisions, Quirk::EventsKey, Quirk::DotnetDates]).await;
    let line = |lines: &[Value], m: &str| lines.iter().find(|l| l["message"] == m).unwrap_or_else(|| panic!("{m}: {lines:?}"))["fields"].clone();
    for lines in [&documented, &captured] {
        assert!(line(lines, "from")["uri"].as_str().is_some_and(|u| u.starts_with("sip:caller")), "{lines:?}");
        let ago = line(lines, "created")["ago_ms"].as_i64().expect("the date decodes");
        assert!((-60_000..60_000).contains(&ago), "created about now: {ago} ms ago");
        assert!(lines.iter().any(|l| l["message"] == "session updated"), "the channel went on: {lines:?}");
    }
    assert_eq!(line(&documented, "from")["revision"], Value::Null);
    assert_eq!(line(&captured, "from")["revision"], "2");
    assert!(line(&documented, "from")["link"].as_str().unwrap().contains("@fabrikam.com"));
    assert!(line(&captured, "from")["link"].as_str().unwrap().ends_with("0"), "an opaque participant id: {captured:?}");
}

#[tokio::test]
async fn an_application_without_embedded_me_is_made_available_through_its_me() {
    let sim = start_sim(quirky(&[Quirk::NoEmbeddedMe, Quirk::EmbeddedArrays])).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('call') end)\n");
    // start_agent waits until the simulator's record shows the application available.
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("calls", 1).await, ["call"]);
    let health: Value = reqwest::get(format!("http://{}/healthz", agent.metrics.unwrap())).await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["warnings"].as_array().map(Vec::len)), (Some("ok"), Some(0)), "{health}");
    agent.stop().await;
}

#[tokio::test]
async fn an_application_without_me_says_calls_will_not_arrive() {
    let sim = start_sim(quirky(&[Quirk::NoMe])).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_waiting(&sim, &config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\""), false).await;
    let url = format!("http://{}/healthz", agent.metrics.unwrap());
    let mut health = Value::Null;
    let deadline = std::time::Instant::now() + PATIENCE;
    while health["state"] != "polling" || health["warnings"].as_array().is_none_or(Vec::is_empty) {
        assert!(std::time::Instant::now() < deadline, "no warning in /healthz: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        health = reqwest::get(&url).await.unwrap().json().await.unwrap();
    }
    // Still polling (200), but degraded, with the reason.
    assert_eq!(health["status"], "degraded", "{health}");
    let warning = health["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with("not available for incoming calls") && warning.contains("no `me`"), "{warning}");
    let apps: Value = reqwest::get(format!("{}/sim/v1/applications", sim.origin())).await.unwrap().json().await.unwrap();
    assert_eq!(apps[0]["available"], false, "{apps}");
    agent.stop().await;
}

#[tokio::test]
async fn a_403_invalid_token_is_renewed_like_a_401() {
    let sim = start_sim(quirky(&[Quirk::InvalidToken403])).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('call') end)\n");
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    sim.inject(Fault::TokenExpiry, 1);
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("calls", 1).await, ["call"]);
    assert!(sim.counters()["tokens_issued"].as_u64().unwrap() >= 2, "{}", sim.counters());
    agent.stop().await;
}

#[tokio::test]
async fn autodiscover_answers_xml_without_a_json_accept_and_the_agent_asks_for_json() {
    let sim = start_sim(quirky(&[Quirk::XmlAutodiscover])).await;
    let plain = reqwest::get(sim.discovery_url()).await.unwrap();
    assert!(plain.headers()["content-type"].to_str().unwrap().contains("xml"));
    let text = plain.text().await.unwrap();
    assert!(text.contains("<Link token=\"user\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iis_error_page_is_logged_by_its_diagnostics_not_its_html() {
    let sim = start_sim(quirky(&[Quirk::IisErrors])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&sim, dir.path(), "");
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, std::fs::File::create(&log).unwrap());
    wait_available(&sim).await;
    sim.inject(Fault::ServerError { status: 500, retry_after: None }, 1);
    sim.start_call(answered_call()).unwrap(); // releases the parked poll; the next one fails
    file_contains(&log, "X-Ms-Diagnostics: 28032; reason=").await;
    file_contains(&log, "The front end server is unavailable").await;
    signal(&agent, "-TERM");
    exit_within(&mut agent, PATIENCE).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("<html") && !text.contains("DOCTYPE"), "no HTML in the log: {text}");
}

#[tokio::test]
async fn a_restart_after_a_graceful_stop_gives_scripts_a_resync() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "watch.lua", r#"agent.on("agent", function(e) agent.log.info(e.type .. " " .. tostring(e.resource.reason)) end)"#);
    let config = config_text(&sim, dir.path(), "");
    let mut first = start_agent(&sim, &config).await;
    assert_eq!(first.messages("watch", 1).await, ["signedIn nil"]);
    first.stop().await;
    // The graceful stop deleted the application: the next one is new, and scripts hear why.
    let mut second = start_agent(&sim, &config).await;
    let seen = second.messages("watch", 2).await;
    assert!(seen[0].starts_with("resync a new application"), "{seen:?}");
    assert_eq!(seen[1], "signedIn nil");
    second.stop().await;
}

#[test]
fn the_simulator_doc_names_every_quirk_as_the_config_takes_it() {
    use clap::ValueEnum;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SIMULATOR.md")).unwrap();
    let table = doc.split("\n## Quirks\n").nth(1).expect("docs/SIMULATOR.md: the Quirks section");
    let names: Vec<&str> =
        table.lines().skip_while(|l| !l.starts_with("| quirk |")).skip(2).take_while(|l| l.starts_with("| `")).map(|l| l.split('`').nth(1).unwrap()).collect();
    let parsed: Quirks = names.iter().map(|n| serde_json::from_value::<Quirk>(json!(n)).unwrap_or_else(|e| panic!("{n}: {e}"))).collect();
    let all: Quirks = Quirk::value_variants().iter().copied().collect();
    assert_eq!(parsed, all, "docs/SIMULATOR.md lists {names:?}");
    for n in &names {
        assert!(Quirk::from_str(n, false).is_ok(), "simulate --quirk {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_resumed_application_still_says_calls_will_not_arrive() {
    let sim = start_sim(quirky(&[Quirk::NoMe])).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let degraded = || async {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
                let h: Value = r.json().await.unwrap();
                if h["state"] == "polling" && h["status"] == "degraded" {
                    return h;
                }
            }
            assert!(std::time::Instant::now() < deadline, "never polling and degraded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut first = spawn_agent(&config, std::process::Stdio::null());
    degraded().await;
    signal(&first, "-KILL");
    exit_within(&mut first, PATIENCE).await;
    let mut second = spawn_agent(&config, std::process::Stdio::null());
    let h = degraded().await;
    assert!(h["warnings"][0].as_str().unwrap().contains("not available for incoming calls"), "{h}");
    assert_eq!(sim.counters()["applications_created"], 1, "the same application, resumed");
    signal(&second, "-TERM");
    exit_within(&mut second, PATIENCE).await;
}
