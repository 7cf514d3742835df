//! What comes from outside the sandbox cannot crash, wedge or starve the agent (issue 22): a
//! pool's oversized bodies, a pool that keeps losing applications, a script reaching for the
//! simulator's control API.

mod common;

use common::*;
use std::time::Duration;
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
