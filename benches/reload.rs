//! Reload figures, printed (no assertions): `cargo bench --bench reload`.
//!
//! - reload latency: from the rename of a saved script to the first event handled by the new
//!   version, with the real watcher and the default 100 ms debounce, p50 and p99 over 100 saves
//!   (events are offered every millisecond, so the resolution is about 1 ms);
//! - memory: resident set size after 1 reload and after 1,000 more;
//! - footprint: RSS of the process idle with 10 scripts loaded, and per script.

use std::sync::Arc;
use std::time::{Duration, Instant};
use ucwa_agent::script::{watch_dir, Limits, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use ucwa_agent::store::Store;
use ucwa_agent::ucwa::{batch, Event, Origin};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn tick(seq: u64) -> Vec<Event> {
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let body = batch::synthetic_body(&[("tick", "https://pool.contoso.com/x", serde_json::json!({}))]);
    let mut ev = batch::parse(&body, &origin).unwrap().events.remove(0);
    ev.seq = seq;
    vec![ev]
}

fn script(n: usize) -> String {
    format!("agent.on('agent', 'tick', function(e) agent.log.info('v' .. agent.script.version) end) -- save {n}\n")
}

fn host(dir: &std::path::Path) -> ScriptHost {
    ScriptHost::with_env(dir.to_path_buf(), ScriptEnv::new(ScriptSettings::new(Limits::default()), Arc::new(Store::in_memory())))
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn reload_latency(saves: usize, debounce: Duration) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rule.lua");
    std::fs::write(&path, script(0)).unwrap();
    let h = host(dir.path());
    h.load_dir().await.unwrap();
    let _watch = watch_dir(h.clone(), debounce).unwrap();
    let mut out = h.subscribe();
    let mut seq = 0;
    let mut times = Vec::new();
    for n in 1..=saves {
        let want = format!("v{}", n + 1);
        let tmp = dir.path().join(".rule.lua.tmp");
        std::fs::write(&tmp, script(n)).unwrap();
        let t0 = Instant::now();
        std::fs::rename(&tmp, &path).unwrap();
        'wait: loop {
            seq += 1;
            h.dispatch(tick(seq));
            tokio::time::sleep(Duration::from_millis(1)).await;
            while let Ok(o) = out.try_recv() {
                if matches!(&o, ScriptOutput::Log { message, .. } if *message == want) {
                    times.push(t0.elapsed());
                    break 'wait;
                }
            }
        }
    }
    times.sort();
    (pct(&times, 50), pct(&times, 99))
}

async fn reload_memory(reloads: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rule.lua");
    std::fs::write(&path, script(0)).unwrap();
    let h = host(dir.path());
    h.load_dir().await.unwrap();
    let mut out = h.subscribe();
    let mut seq = 0;
    let reload = |n: usize| {
        std::fs::write(&path, script(n)).unwrap();
        let h = h.clone();
        let path = path.clone();
        async move { h.load_file(&path).await.unwrap() }
    };
    let mut settle = async |out: &mut tokio::sync::broadcast::Receiver<ScriptOutput>, version: u64| {
        seq += 1;
        h.dispatch(tick(seq));
        let want = format!("v{version}");
        loop {
            if let Ok(ScriptOutput::Log { message, .. }) = out.recv().await {
                if message == want {
                    return;
                }
            }
        }
    };
    let v = reload(1).await;
    settle(&mut out, v).await;
    let after_one = rss_kib();
    for n in 2..=reloads + 1 {
        let v = reload(n).await;
        settle(&mut out, v).await;
    }
    (after_one, rss_kib())
}

/// RSS with `scripts` scripts loaded, and the cost of each script beyond those (measured over
/// 40 more, so one-time costs such as thread pools are not counted per script).
async fn footprint(scripts: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..scripts {
        std::fs::write(dir.path().join(format!("s{i}.lua")), script(i)).unwrap();
    }
    let h = host(dir.path());
    h.load_dir().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with_some = rss_kib();
    const MORE: usize = 40;
    for i in scripts..scripts + MORE {
        let p = dir.path().join(format!("s{i}.lua"));
        std::fs::write(&p, script(i)).unwrap();
        h.load_file(&p).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per = rss_kib().saturating_sub(with_some) / MORE as u64;
    h.shutdown(Duration::from_secs(1)).await;
    (with_some, per)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("ucwa-agent reload bench ({} logical CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    rt.block_on(async {
        let (total, per) = footprint(10).await;
        println!("idle RSS of this process with 10 scripts loaded: {:.1} MiB; per script: {per} KiB", total as f64 / 1024.0);
        let (p50, p99) = reload_latency(100, Duration::from_millis(100)).await;
        println!("reload latency (rename -> first event on the new version), debounce 100 ms, 100 saves: p50 {p50:.1} ms, p99 {p99:.1} ms");
        let (one, thousand) = reload_memory(1000).await;
        println!(
            "RSS after 1 reload: {:.1} MiB; after 1,000 more: {:.1} MiB (growth {} KiB)",
            one as f64 / 1024.0,
            thousand as f64 / 1024.0,
            thousand as i64 - one as i64
        );
    });
}
