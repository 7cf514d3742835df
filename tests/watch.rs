//! `agent.people.watch` against the simulator: a watched contact's presence change reaches the
//! script as a `contactPresence` event; the watch is the account's (kept in its store), so it
//! holds after a restart and on a new application without the script calling watch again; the
//! subscription is extended before it expires. Read back from the simulator's own record.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use ucwa_agent::sim::{Fault, SimConfig, Simulator};

fn colleagues() -> SimConfig {
    let users = ["demo", "bob", "carol"].iter().map(|u| (format!("{u}@contoso.com"), "demo".to_string())).collect();
    SimConfig { users, ..sim_config() }
}

async fn set_presence(sim: &Simulator, uri: &str, availability: &str) {
    let r = test_http().put(format!("{}/sim/v1/contacts/{uri}/presence", sim.origin())).json(&json!({"availability": availability})).send().await.unwrap();
    assert_eq!(r.status(), 204, "PUT presence of {uri}");
}

async fn subscriptions(sim: &Simulator) -> Vec<Value> {
    let v: Value = test_http().get(format!("{}/sim/v1/presence_subscriptions", sim.origin())).send().await.unwrap().json().await.unwrap();
    v.as_array().unwrap().clone()
}

/// Waits until the simulator holds exactly one subscription, of `uris`; gives it.
async fn subscribed(sim: &Simulator, uris: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let all = subscriptions(sim).await;
        if let [one] = all.as_slice() {
            if one["uris"] == json!(uris) {
                return one.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no subscription of {uris:?}: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the script's log lines until `want` (a subscription's first events say each
/// contact's presence as it is: those come first).
async fn until(agent: &mut Running, script: &str, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = agent.messages(script, 1).await.remove(0);
        seen.push(line.clone());
        if line == want {
            return seen;
        }
        assert!(seen.len() < 20, "{want:?} never came: {seen:?}");
    }
}

// An event still queued from an application the test has just lost (`Fault::ApplicationGone`)
// can no longer have its presence read (404 ApplicationNotFound): the script says so instead
// of failing, as a careful script would; the test waits for the lines it wants.
const HANDLER: &str = r#"
agent.on("contactPresence", function(e)
  local ok, availability = pcall(function() return e.availability end)
  if ok then agent.log.info(e.uri .. " " .. availability) else agent.log.warn(e.uri .. " unreadable: " .. tostring(availability)) end
end)
"#;

#[tokio::test]
async fn a_watched_contacts_changes_reach_the_script_and_still_do_after_a_restart() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    // The top level watches (a handle with :cancel()); mixed case is one contact.
    write(dir.path(), "presence.lua", &format!("local h = agent.people.watch({{\"sip:Bob@Contoso.com\", \"sip:bob@contoso.com\"}})\nassert(h.uris[1] == \"sip:bob@contoso.com\" and #h.uris == 1)\n{HANDLER}"));
    let config = config_text(&sim, dir.path(), "");
    let mut agent = start_agent(&sim, &config).await;
    let first = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    assert_eq!(first["user"], "demo@contoso.com");
    set_presence(&sim, "sip:carol@contoso.com", "Busy").await; // not watched: no event
    set_presence(&sim, "sip:bob@contoso.com", "Busy").await;
    let seen = until(&mut agent, "presence", "sip:bob@contoso.com Busy").await;
    assert!(seen.iter().all(|l| l.starts_with("sip:bob@contoso.com ")), "only bob is watched: {seen:?}");
    agent.stop().await;
    // The graceful stop deleted the application, and its subscription with it.
    assert!(subscriptions(&sim).await.is_empty());

    // The same state folder, the script without any watch call: bob is still watched.
    write(dir.path(), "presence.lua", HANDLER);
    let mut agent = start_agent(&sim, &config).await;
    let second = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    assert_ne!(second["application"], first["application"], "a new application");
    set_presence(&sim, "sip:bob@contoso.com", "Away").await;
    until(&mut agent, "presence", "sip:bob@contoso.com Away").await;

    // The application lost: the next one subscribes again, by itself.
    sim.inject(Fault::ApplicationGone, 1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let third = loop {
        let all = subscriptions(&sim).await;
        if let [one] = all.as_slice() {
            if one["application"] != second["application"] {
                break one.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no subscription on a new application: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(third["uris"], json!(["sip:bob@contoso.com"]));
    set_presence(&sim, "sip:bob@contoso.com", "DoNotDisturb").await;
    until(&mut agent, "presence", "sip:bob@contoso.com DoNotDisturb").await;
    agent.stop().await;
}

#[tokio::test]
async fn watches_are_added_and_removed_in_the_subscription_and_it_ends_with_the_last() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "team.lua",
        r#"
agent.on("audioVideoInvitation", "started", function(e)
  local h = agent.people.watch("sip:carol@contoso.com")
  agent.log.info("watching " .. table.concat(agent.people.watching(), ","))
  h:cancel()
  agent.people.unwatch()
  agent.log.info("watching " .. #agent.people.watching())
  local ok, err = pcall(agent.people.watch, {"bob@contoso.com"})
  agent.log.info(err)
end)
agent.people.watch({"sip:bob@contoso.com"})
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    subscribed(&sim, &["sip:bob@contoso.com"]).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(
        agent.messages("team", 3).await,
        [
            "watching sip:bob@contoso.com,sip:carol@contoso.com",
            "watching 0",
            "team.lua:8: agent.people.watch: expected sip: URIs such as \"sip:ann@contoso.com\", got bob@contoso.com"
        ]
    );
    // Nobody watched any more: the subscription is deleted.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !subscriptions(&sim).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the subscription stays: {:?}", subscriptions(&sim).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.counters()["presence_subscriptions_deleted"], 1);
    agent.stop().await;
}

#[tokio::test]
async fn the_subscription_is_extended_before_it_expires() {
    // 30 "minutes" = 1.8 s; the pool says it is about to expire at 1.2 s.
    let sim = start_sim(SimConfig { presence_minute: Duration::from_millis(60), ..colleagues() }).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "presence.lua", &format!("agent.people.watch({{\"sip:bob@contoso.com\"}})\n{HANDLER}"));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let first = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    // Three lifetimes and more.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let now = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    assert_eq!(now["id"], first["id"], "the same subscription, extended: {now}");
    assert!(now["extensions"].as_u64().unwrap() >= 3, "{now}");
    let counters = sim.counters();
    assert_eq!((counters["presence_subscriptions_expired"].as_u64(), counters["presence_subscriptions_created"].as_u64()), (Some(0), Some(1)), "{counters}");
    set_presence(&sim, "sip:bob@contoso.com", "BeRightBack").await;
    until(&mut agent, "presence", "sip:bob@contoso.com BeRightBack").await;
    agent.stop().await;
}

#[tokio::test]
async fn a_subscription_the_pool_ended_in_a_resume_is_made_again() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "presence.lua", &format!("agent.people.watch({{\"sip:bob@contoso.com\"}})\n{HANDLER}"));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let first = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    // The pool cleaned up (subscriptions ended, no event) and answers `resume`.
    sim.inject(Fault::Resume, 1);
    sim.start_call(answered_call()).unwrap(); // events: the parked poll returns, the next one meets the fault
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let all = subscriptions(&sim).await;
        if all.len() == 1 && all[0]["id"] != first["id"] {
            assert_eq!((&all[0]["application"], &all[0]["uris"]), (&first["application"], &json!(["sip:bob@contoso.com"])), "the same application");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not made again: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    set_presence(&sim, "sip:bob@contoso.com", "Offwork").await;
    until(&mut agent, "presence", "sip:bob@contoso.com Offwork").await;
    agent.stop().await;
}

#[test]
fn offline_a_watch_is_reported_as_what_it_would_send() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("config.toml"), "[scripts]\ndir = \"scripts\"\n").unwrap();
    std::fs::write(
        dir.path().join("scripts/team.lua"),
        "agent.on('audioVideoInvitation', 'started', function(e)\n  agent.people.watch({'sip:Bob@contoso.com'})\n  agent.log.info('watching ' .. agent.people.watching()[1])\nend)\n",
    )
    .unwrap();
    let app = "/ucwa/oauth/v1/applications/777";
    let batch = json!({
        "_links": {"next": {"href": format!("{app}/events?ack=2")}},
        "sender": [{"rel": "communication", "href": format!("{app}/communication"), "events": [
            {"link": {"rel": "audioVideoInvitation", "href": format!("{app}/communication/audioVideoInvitations/1")}, "type": "started"}
        ]}]
    });
    std::fs::write(dir.path().join("calls.jsonl"), format!("{batch}\n")).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ucwa-agent"))
        .args(["replay", "calls.jsonl"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains(&format!("  would send (ucwa): POST {app}/people/presenceSubscriptions {{\"duration\":30,\"uris\":[\"sip:bob@contoso.com\"]}}\n")),
        "{out}"
    );
    assert!(out.contains("  info: watching sip:bob@contoso.com\n"), "{out}");
}

#[tokio::test]
async fn after_a_crash_the_resumed_application_keeps_one_subscription_and_the_watch() {
    let sim = start_sim(colleagues()).await;
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    write(&scripts, "presence.lua", &format!("agent.people.watch(\"sip:bob@contoso.com\")\n{HANDLER}"));
    let config = dir.path().join("config.toml");
    let text = format!(
        "[server]\ndiscover = \"{}\"\nmax_backoff_secs = 1\n[auth]\n{PASSWORD_AUTH}\n[scripts]\ndir = \"scripts\"\nwatch = false\n[state]\ndir = \"state\"\n",
        sim.discovery_url()
    );
    std::fs::write(&config, text).unwrap();
    let run = |log: &str| {
        let file = std::fs::File::create(dir.path().join(log)).unwrap();
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(file).spawn_guarded()
    };
    let mut agent = run("first.log");
    let first = subscribed(&sim, &["sip:bob@contoso.com"]).await;
    agent.kill().expect("SIGKILL");
    agent.wait().unwrap();

    // A new process, the script without any watch call: the application is resumed, the
    // earlier process's subscription replaced (not doubled), bob still watched.
    write(&scripts, "presence.lua", HANDLER);
    let mut agent = run("second.log");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let second = loop {
        let all = subscriptions(&sim).await;
        if let [one] = all.as_slice() {
            if one["id"] != first["id"] {
                break one.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "not replaced: {all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((&second["application"], &second["uris"]), (&first["application"], &json!(["sip:bob@contoso.com"])), "the resumed application");
    assert_eq!(sim.counters()["presence_subscriptions_deleted"], 1);
    set_presence(&sim, "sip:bob@contoso.com", "Away").await;
    file_contains(&dir.path().join("second.log"), "sip:bob@contoso.com Away").await;
    agent.kill().unwrap();
    agent.wait().unwrap();
}
