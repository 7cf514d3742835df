//! The directory from scripts against the simulator: `agent.people.search` and `.get` read what
//! the pool shows (presence set through the control API), and the VIP example routes a call to
//! the available colleague, read back from the simulator's own call list.

mod common;

use common::*;
use serde_json::{json, Value};
use ucwa_agent::sim::{CallOutcome, CallSpec, SimConfig, Simulator};

fn colleagues() -> SimConfig {
    let users = ["demo", "bob", "carol"].iter().map(|u| (format!("{u}@contoso.com"), "demo".to_string())).collect();
    SimConfig { users, ..sim_config() }
}

async fn set_presence(sim: &Simulator, uri: &str, availability: &str) {
    let r = test_http().put(format!("{}/sim/v1/contacts/{uri}/presence", sim.origin())).json(&json!({"availability": availability})).send().await.unwrap();
    assert_eq!(r.status(), 204, "PUT presence of {uri}");
}

async fn calls(sim: &Simulator) -> Value {
    test_http().get(format!("{}/sim/v1/calls", sim.origin())).send().await.unwrap().json().await.unwrap()
}

fn vip_call() -> CallSpec {
    CallSpec { outcome: CallOutcome::WaitForAccept, remote: Some("sip:ceo@contoso.com".into()), user: Some("demo@contoso.com".into()), ..Default::default() }
}

#[tokio::test]
async fn scripts_search_and_read_people_on_the_pool() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "directory.lua",
        r#"
agent.on("audioVideoInvitation", "started", function(e)
  local found = agent.people.search("BO")
  agent.log.info("found " .. #found .. " " .. found[1].uri .. " " .. found[1].name .. " " .. found[1].email)
  local bob = agent.people.get("sip:bob@contoso.com")
  agent.log.info(bob.name .. " " .. bob.presence .. " [" .. bob.note .. "] [" .. bob.location .. "]")
  local ok, err = pcall(agent.people.get, "sip:nobody@contoso.com")
  agent.log.info(err)
end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    wait_available(&sim).await;
    set_presence(&sim, "sip:bob@contoso.com", "Busy").await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(
        agent.messages("directory", 3).await,
        [
            "found 1 sip:bob@contoso.com Bob bob@contoso.com",
            "Bob Busy [] []",
            "directory.lua:7: agent.people.get: sip:nobody@contoso.com is not in the directory"
        ]
    );
    set_presence(&sim, "sip:bob@contoso.com", "BeRightBack").await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("directory", 3).await[1], "Bob BeRightBack [] []");
    agent.stop().await;
}

#[tokio::test]
async fn the_vip_example_picks_the_available_colleague_else_voicemail() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/vip_to_colleague.lua"), dir.path().join("vip_to_colleague.lua")).unwrap();
    let extra = r#"[scripts.config.vip_to_colleague]
vips = ["sip:ceo@contoso.com"]
colleagues = [
  { uri = "sip:bob@contoso.com", phone = "tel:+14255550101" },
  { uri = "sip:carol@contoso.com", phone = "tel:+14255550102" },
]"#;
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), extra)).await;
    wait_available(&sim).await;
    set_presence(&sim, "sip:bob@contoso.com", "Away").await;
    set_presence(&sim, "sip:carol@contoso.com", "Online").await;
    let first = sim.start_call(vip_call()).unwrap();
    assert_eq!(agent.messages("vip_to_colleague", 1).await, ["VIP call answered by a colleague"]);
    let all = calls(&sim).await;
    let call = all.as_array().unwrap().iter().find(|c| c["id"] == first).expect("the call is listed");
    assert_eq!(call["answered_on"], "tel:+14255550102", "carol is the one Online: {all}");
    // Nobody available: declined (voicemail), and the pool lists the call as declined.
    set_presence(&sim, "sip:carol@contoso.com", "Busy").await;
    let second = sim.start_call(vip_call()).unwrap();
    assert_eq!(agent.messages("vip_to_colleague", 1).await, ["VIP call to voicemail: no colleague available"]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let all = calls(&sim).await;
        let outcome = all.as_array().unwrap().iter().find(|c| c["id"] == second).map(|c| c["outcome"].clone());
        if outcome == Some(json!("declined")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the second call: {outcome:?} in {all}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    agent.stop().await;
}
