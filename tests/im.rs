//! Instant messages from scripts against the simulator: accepting, declining, answering in the
//! same conversation, `agent.im.send` reusing a conversation, stopping; checked in the
//! simulator's own record (`/sim/v1/messages`, `/sim/v1/conversations`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use ucwa_agent::script::{Limits, ScriptHost, ScriptOutput};
use ucwa_agent::ucwa::{batch, Origin};

/// Someone sends the account an IM through the control API: its answer (`conversation`, …).
async fn im_from(sim: &ucwa_agent::sim::Simulator, from: &str, text: &str) -> Value {
    let r = test_http()
        .post(format!("{}/sim/v1/messages", sim.origin()))
        .json(&json!({"from": from, "to": "sip:demo@contoso.com", "text": text}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "POST /sim/v1/messages: {}", r.status());
    r.json().await.unwrap()
}

async fn control(sim: &ucwa_agent::sim::Simulator, path: &str) -> Value {
    test_http().get(format!("{}/sim/v1/{path}", sim.origin())).send().await.unwrap().json().await.unwrap()
}

/// Waits until `to` has received `n` messages from the account; gives them (`text`, `conversation`).
async fn received(sim: &ucwa_agent::sim::Simulator, to: &str, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let all = control(sim, "messages").await;
        let got: Vec<(String, String)> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["from"] == "sip:demo@contoso.com" && m["to"] == to)
            .map(|m| (m["text"].as_str().unwrap().to_string(), m["conversation"].as_str().unwrap().to_string()))
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "{to} received {got:?}, waiting for {n}: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn conversations_with(all: &Value, remote: &str) -> Vec<Value> {
    all.as_array().unwrap().iter().filter(|c| c["remote"] == remote).cloned().collect()
}

#[tokio::test]
async fn the_im_bot_answers_in_the_same_conversation_and_the_sender_sees_it() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/im_bot.lua"), dir.path().join("im_bot.lua")).unwrap();
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    wait_available(&sim).await;
    let ann = "sip:ann@fabrikam.com";
    let first = im_from(&sim, ann, "help").await;
    let got = received(&sim, ann, 1).await;
    assert_eq!(got[0], ("I answer: help, status, calls today".to_string(), first["conversation"].as_str().unwrap().to_string()));
    // Her next question arrives in the open conversation, and so does the answer.
    let again = im_from(&sim, ann, "  Status ").await;
    assert_eq!(again["conversation"], first["conversation"]);
    let got = received(&sim, ann, 2).await;
    assert_eq!(got[1], ("Online, 0 calls in progress".to_string(), first["conversation"].as_str().unwrap().to_string()));
    let convs = conversations_with(&control(&sim, "conversations").await, ann);
    assert_eq!(convs.len(), 1, "{convs:?}");
    assert_eq!((convs[0]["state"].as_str(), convs[0]["messages"].as_u64()), (Some("Connected"), Some(4)));
    agent.stop().await;
}

#[tokio::test]
async fn scripts_accept_decline_reply_reuse_and_stop_on_the_pool() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "desk.lua",
        r#"
agent.on("messagingInvitation", "started", function(e)
  if e.direction ~= "Incoming" then return end
  agent.log.info("invited by " .. e.from .. ": " .. e.text)
  if e.from == "sip:carl@fabrikam.com" then agent.im.decline(e) else agent.im.accept(e) end
end)
agent.on("message", "completed", function(e)
  if e.direction ~= "Incoming" then return end
  if e.text == "bye now" then
    agent.im.stop(e)
    agent.log.info("stopped")
    return
  end
  local inv, conv = agent.im.send(e.from, "you said: " .. e.text)
  agent.log.info("got " .. e.text .. " from " .. e.from .. ", reused " .. tostring(inv == nil and conv ~= nil))
  local ok, err = pcall(agent.im.reply, e, "")
  agent.log.info(err)
end)
"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    wait_available(&sim).await;
    let ann = "sip:ann@fabrikam.com";
    let first = im_from(&sim, ann, "hello, 1+1=2?").await;
    assert_eq!(
        agent.messages("desk", 3).await,
        [
            "invited by sip:ann@fabrikam.com: hello, 1+1=2?",
            "got hello, 1+1=2? from sip:ann@fabrikam.com, reused true",
            "desk.lua:16: agent.im.reply: expected a message text"
        ]
    );
    let got = received(&sim, ann, 1).await;
    assert_eq!(got[0], ("you said: hello, 1+1=2?".to_string(), first["conversation"].as_str().unwrap().to_string()));
    // Declined: the pool ends the invitation.
    im_from(&sim, "sip:carl@fabrikam.com", "hi").await;
    assert_eq!(agent.messages("desk", 1).await, ["invited by sip:carl@fabrikam.com: hi"]);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while conversations_with(&control(&sim, "conversations").await, "sip:carl@fabrikam.com")[0]["state"] != "Declined" {
        assert!(tokio::time::Instant::now() < deadline, "carl's invitation was never declined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopped: the conversation ends on the pool.
    im_from(&sim, ann, "bye now").await;
    assert_eq!(agent.messages("desk", 1).await, ["stopped"]);
    let convs = conversations_with(&control(&sim, "conversations").await, ann);
    assert_eq!(convs.len(), 1, "agent.im.send reused the conversation: {convs:?}");
    assert_eq!(convs[0]["state"], "Ended");
    agent.stop().await;
}

#[tokio::test]
async fn the_documentation_samples_read_as_text_from_and_direction() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "reader.lua",
        r#"
agent.on("*", function(e)
  agent.log.info(e.rel .. " " .. e.direction .. " " .. e.from .. " [" .. e.text .. "]")
end)
"#,
    );
    let host = ScriptHost::new(dir.path().to_path_buf(), Limits::default());
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    for (n, name) in ["doc-ReceiveAnIM-04", "doc-ReceiveAnIM-06"].iter().enumerate() {
        let body = std::fs::read(format!("{}/tests/fixtures/events/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut ev = batch::parse(&body, &origin).unwrap().events.remove(0);
        ev.seq = n as u64 + 1;
        host.dispatch(vec![ev]);
    }
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let o = expect(&mut out, "reader", |o| matches!(o, ScriptOutput::Log { .. } | ScriptOutput::HandlerError { .. })).await;
        match o {
            ScriptOutput::Log { message, .. } => lines.push(message),
            other => panic!("{other:?}"),
        }
    }
    // `Hi+Tosh%0d%0a`: `+` is a space; the sender from the message's contact link.
    assert_eq!(lines, ["messagingInvitation Incoming sip:lenea@contoso.com [Hi Tosh\r\n]", "message Incoming sip:lenea@contoso.com [Hi Tosh\r\n]"]);
}

#[tokio::test]
async fn an_html_message_of_many_angle_brackets_reads_as_text_within_the_limits() {
    // A sender's HTML message: its tags are dropped; 20,000 `<` with no `>` after them are
    // text, read in one pass (a pattern that scanned on from each one hit the instruction limit).
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "reader.lua", "agent.on('*', function(e) agent.log.info(#e.text .. ' ' .. e.text:sub(-24)) end)\n");
    let host = ScriptHost::new(dir.path().to_path_buf(), Limits::default());
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let body = std::fs::read_to_string(format!("{}/tests/fixtures/events/doc-ReceiveAnIM-04.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for (n, data) in [format!("{}hi", "%3C".repeat(20_000)), "%3Cp%3E%3Cb%3EHi%3C/b%3E Tosh%3C/p%3E %3C%3Cx%3E 1 %3C 2".to_string()].iter().enumerate() {
        let html = body.replace("data:text/plain;charset=utf-8,Hi+Tosh%0d%0a", &format!("data:text/html;charset=utf-8,{data}"));
        let mut ev = batch::parse(html.as_bytes(), &origin).unwrap().events.remove(0);
        ev.seq = n as u64 + 1;
        host.dispatch(vec![ev]);
    }
    let mut lines = Vec::new();
    while lines.len() < 2 {
        match expect(&mut out, "reader", |o| matches!(o, ScriptOutput::Log { .. } | ScriptOutput::HandlerError { .. })).await {
            ScriptOutput::Log { message, .. } => lines.push(message),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(lines, [format!("20002 {}hi", "<".repeat(22)), "14 Hi Tosh  1 < 2".to_string()]);
}
