//! What comes from outside the sandbox cannot crash, wedge or starve the agent (issue 22): a
//! pool's oversized bodies, a pool that keeps losing applications, a script reaching for the
//! simulator's control API.

mod common;

use common::*;
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::Fault;

/// The peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

#[tokio::test]
async fn a_gzip_bomb_and_an_endless_body_end_in_a_clear_error_with_memory_bounded() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "witness.lua", r#"agent.on("audioVideoSession", "added", function(e) agent.log.warn("witness saw a call") end)"#);
    let config = config_file(&sim, dir.path(), "");
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, std::fs::File::create(&log).unwrap());
    wait_available(&sim).await;
    // About 1 GiB each once inflated: the gzip one is about 1 MiB on the wire.
    sim.inject(Fault::EndlessBody { gzip: true }, 1);
    sim.inject(Fault::EndlessBody { gzip: false }, 1);
    // Wake the parked poll so the faults apply now.
    let call = sim.start_call(answered_call()).unwrap();
    file_contains(&log, "witness saw a call").await;
    sim.end_call(call);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("the answer is larger than 32 MiB (the most the agent reads); not read further").count(),
        2,
        "both bodies were cut off with a clear error: {text}"
    );
    let peak = peak_rss(agent.id());
    assert!(peak < 256 << 20, "the agent's peak memory stayed bounded: {} MiB", peak >> 20);
    assert_eq!(sim.counters()["faults_applied"], 2);
    agent.kill().unwrap();
}

#[tokio::test]
async fn twenty_application_losses_in_a_row_create_applications_with_backoff() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    // max_backoff_secs = 1 (the test configuration): each new application waits 0.5 to 1 s.
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "[metrics]\nlisten = \"127.0.0.1:0\"")).await;
    let url = format!("http://{}/metrics", agent.metrics.unwrap());
    let created = || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix("ucwa_applications_total ")).expect("ucwa_applications_total").parse::<u64>().unwrap()
    };
    let before = created().await;
    // Each poll of each new application answers 404: the application is gone, again and again.
    sim.inject(Fault::ServerError { status: 404, retry_after: None }, 20);
    let call = sim.start_call(answered_call()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_three_seconds = created().await - before;
    assert!(in_three_seconds >= 1, "the lost application was created again");
    // Without backoff all 20 go within a second or two (the adversarial trial saw 128 in 10 s).
    assert!(in_three_seconds <= 7, "{in_three_seconds} applications in 3 s: no backoff");
    sim.end_call(call);
    agent.stop().await;
}

#[tokio::test]
async fn a_scripts_request_to_the_control_api_is_refused() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "meddler.lua",
        r#"agent.on("audioVideoSession", "added", function(e)
  for _, href in ipairs({"/sim/v1/faults", "/SIM/v1/faults", "/ucwa/%2e%2e/sim/v1/faults", "/%73im/v1/faults"}) do
    local ok, err = pcall(agent.ucwa.post, href, {kind = "server_error", count = 1000000000})
    agent.log.info(ok and "sent" or err)
  end
  local ok, err = pcall(agent.ucwa.delete, "/sim/v1/calls/" .. tostring(1))
  agent.log.info(ok and "sent" or err)
end)"#,
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let call = sim.start_call(answered_call()).unwrap();
    let said = agent.messages("meddler", 5).await;
    for m in &said {
        assert!(m.contains("is the simulator's control API (/sim/), which scripts cannot call"), "{said:?}");
    }
    assert_eq!(sim.counters()["faults_applied"], 0);
    assert!(sim.end_call(call), "the call was still live");
    agent.stop().await;
}

#[tokio::test]
async fn a_secret_used_as_a_log_field_key_a_metric_name_or_a_label_name_never_leaves() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("UCWA_AGENT_TEST_KEY_SECRET", "tok_9f8e7d6c");
    write(
        dir.path(),
        "leaky.lua",
        r#"local token = agent.config.token
agent.on("audioVideoSession", "added", function(e)
  agent.log.info("fields", {[token] = 1, nested = {["k" .. token] = 2}})
  local ok, err = pcall(agent.metrics.counter, token, "help")
  agent.log.info(ok and "name accepted" or err)
  local m = agent.metrics.counter("leaks", "help with " .. token)
  ok, err = pcall(m.inc, m, 1, {[token] = "x"})
  agent.log.info(ok and "label name accepted" or err)
  m:inc(1, {where = "value " .. token})
  agent.log.info("done")
end)"#,
    );
    let extra = "[scripts.config.leaky]\ntoken = { env = \"UCWA_AGENT_TEST_KEY_SECRET\" }\n[metrics]\nlisten = \"127.0.0.1:0\"";
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), extra)).await;
    let call = sim.start_call(answered_call()).unwrap();
    let mut seen = Vec::new();
    loop {
        let o = agent.expect("leaky's lines", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "leaky")).await;
        let ScriptOutput::Log { message, fields, .. } = o else { unreachable!() };
        let done = message == "done";
        seen.push(format!("{message} {}", fields.map(|f| f.to_string()).unwrap_or_default()));
        if done {
            break;
        }
    }
    let all = seen.join("\n");
    assert!(!all.contains("tok_9f8e7d6c"), "{all}");
    assert!(all.contains(r#"{"[redacted]":1,"nested":{"k[redacted]":2}}"#), "{all}");
    assert!(all.contains("the metric name contains a secret"), "{all}");
    assert!(all.contains("a label name contains a secret"), "{all}");
    let page = reqwest::get(format!("http://{}/metrics", agent.metrics.unwrap())).await.unwrap().text().await.unwrap();
    assert!(!page.contains("tok_9f8e7d6c"), "{page}");
    assert!(page.contains("# HELP ucwa_script_leaks_total help with [redacted]"), "{page}");
    assert!(page.contains(r#"where="value [redacted]""#), "{page}");
    sim.end_call(call);
    agent.stop().await;
}

#[tokio::test]
async fn a_metric_bomb_at_the_limits_keeps_metrics_and_memory_bounded() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // The adversarial trial's bomb, in two scripts: 100 gauges × 1,000 label sets × 5 labels of
    // 200 bytes each, every count within its documented limit (about 180 MB each before).
    let bomb = r#"agent.on("audioVideoSession", "added", function(e)
  local pad = string.rep("x", 196)
  for g = 1, 100 do
    local m = agent.metrics.gauge("g" .. g, "bomb")
    for i = 1, 1000 do
      local ok, err = pcall(m.set, m, 1, {a = pad .. i, b = pad .. i, c = pad .. i, d = pad .. i, e = pad .. i})
      if not ok then agent.log.warn("stopped", {error = tostring(err), g = g, i = i}) return end
    end
  end
  agent.log.warn("stopped", {error = "never"})
end)"#;
    write(dir.path(), "bomb1.lua", bomb);
    write(dir.path(), "bomb2.lua", bomb);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, std::fs::File::create(&log).unwrap());
    wait_available(&sim).await;
    let call = sim.start_call(answered_call()).unwrap();
    eventually("both bombs stopped", || std::fs::read_to_string(&log).unwrap_or_default().matches("stopped").count() >= 2).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("never"), "{text}");
    assert!(text.contains("would hold more than 1024 KiB of series"), "{text}");
    let page = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(page.len() < 4 << 20, "/metrics is {} bytes", page.len());
    let peak = peak_rss(agent.id());
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
    sim.end_call(call);
    agent.kill().unwrap();
}
