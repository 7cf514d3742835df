//! Latency and footprint of the whole agent, printed (no assertions): `cargo bench --bench latency`.
//!
//! - event latency: the agent in-process against its embedded simulator generating about
//!   1,000 events/s (about 117 calls/s, 8 to 10 events each) for 10 s, one trivial script; the
//!   figures come from the agent's own `ucwa_event_delivery_seconds` histogram (a batch's
//!   arrival to a handler starting on its event), so they are bucket bounds;
//! - idle RSS of the real `ucwa-agent` binary with 10 scripts, signed in to a simulator, after
//!   it settled.

use std::process::{Command, Stdio};
use std::time::Duration;
use ucwa_agent::agent::Agent;
use ucwa_agent::config::Config;

fn bucket_quantile(text: &str, q: f64) -> Option<String> {
    let mut buckets: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with("ucwa_event_delivery_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets.retain(|(_, n)| *n >= q * total);
    buckets.first().map(|(le, _)| le.clone())
}

fn counter(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn latency() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/trivial.lua"), "agent.on('*', function(e) end)\n").unwrap();
    let text = "[server]\ndiscover = \"embedded\"\n[scripts]\ndir = \"scripts\"\nwatch = false\n[state]\ndir = \"state\"\n\
                [metrics]\nlisten = \"127.0.0.1:0\"\n[simulator]\ncalls_per_minute = 7000\nring_secs = 0.1\ncall_duration_secs = 1\n";
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let agent = Agent::start(Config::load(&path).unwrap()).await.unwrap();
    let addr = agent.metrics_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(2)).await; // sign-in and the first calls
    let url = format!("http://{addr}/metrics");
    let before = reqwest::get(&url).await.unwrap().text().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let rate = (counter(&after, "ucwa_events_total") - counter(&before, "ucwa_events_total")) / 10.0;
    println!(
        "event latency (arrival -> handler start) at {rate:.0} events/s from the simulator: p50 <= {} s, p99 <= {} s (histogram bucket bounds)",
        bucket_quantile(&after, 0.50).unwrap_or_default(),
        bucket_quantile(&after, 0.99).unwrap_or_default()
    );
    let _ = stop.send(());
    let _ = task.await;
}

fn idle_rss_with_10_scripts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    for i in 0..10 {
        std::fs::write(dir.path().join(format!("scripts/s{i}.lua")), "agent.on('audioVideoSession', function(e) agent.log.info(e.type) end)\n").unwrap();
    }
    std::fs::write(dir.path().join("config.toml"), "[simulator]\ncalls_per_minute = 0\n[scripts]\ndir = \"scripts\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ucwa-agent")).current_dir(dir.path()).env("RUST_LOG", "warn").stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ? kB").to_string();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    println!("idle RSS of the ucwa-agent process (embedded simulator included), 10 scripts, signed in: {}", rss.trim_start_matches("VmRSS:").trim());
}

fn main() {
    println!("ucwa-agent latency bench ({} logical CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    idle_rss_with_10_scripts();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(latency());
}
