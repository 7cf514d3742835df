//! Figures for the event path, printed as a table (no timing assertions: tests never time).
//!
//! `cargo bench --bench pipeline` measures, on the machine it runs on:
//! - dispatch throughput: event-channel response bytes → parse → journal → every script's
//!   trivial handler returned, 100-event batches, with 1 and with 10 scripts;
//! - journal overhead: a batch's arrival (bytes) to the moment the next poll could be sent
//!   (parse + journal + hand-over), median and p99, for call-sized batches (4 events);
//! - the cost of traces (`scripts.traces_per_script`): the throughput with 100 kept per
//!   script next to the figure without (every event here is traced: the handler runs for it);
//! - against a Python loop (`benches/python_loop.py`, when `python3` is on PATH): json.loads of
//!   the same batch bodies and a dict dispatch by `link.rel`, run in turns with our 1-script,
//!   journal-on-disk case, both rates and their ratio printed.

use std::sync::Arc;
use std::time::{Duration, Instant};
use ucwa_agent::agent::sink::EventSink;
use ucwa_agent::script::{Limits, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use ucwa_agent::store::{Position, Store};
use ucwa_agent::ucwa::{batch, Continuation, Origin};

/// The application the bench's batches come from.
const APP: &str = "/ucwa/oauth/v1/applications/10672188130";

/// A sink with the channel position the real agent gives it once its application is open
/// (`agent/account.rs`): every batch with events then commits its `next` with it.
fn sink_with_position(host: &ScriptHost, store: Arc<Store>) -> EventSink {
    let mut sink = EventSink::new(host.clone(), store, 10_000_000);
    sink.set_position(Some(Position {
        pool: "https://pool.contoso.com/".into(),
        user: "bench@contoso.com".into(),
        application: APP.into(),
        report_activity: format!("{APP}/reportMyActivity"),
        next: format!("{APP}/events?ack=1"),
    }));
    sink
}

/// A batch like the simulator's: `n` audioVideoSession events with the embedded session.
fn batch_bytes(ack: u64, n: usize) -> Vec<u8> {
    let app = APP;
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let conv = format!("{app}/communication/conversations/{}", ack * 1000 + i as u64);
            let kind = ["added", "updated", "deleted"][i % 3];
            serde_json::json!({
                "link": {"rel": "audioVideoSession", "href": format!("{conv}/audioVideo/audioVideoSession")},
                "type": kind,
                "_embedded": {"audioVideoSession": {
                    "rel": "audioVideoSession", "state": "Established", "remoteEndpoint": "sip:alice@fabrikam.com",
                    "_links": {"self": {"href": format!("{conv}/audioVideo/audioVideoSession")},
                               "conversation": {"href": conv}}}}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "_links": {"self": {"href": format!("{app}/events?ack={ack}")}, "next": {"href": format!("{app}/events?ack={}", ack + 1)}},
        "sender": [{"rel": "communication", "href": format!("{app}/communication"), "events": events}]
    }))
    .unwrap()
}

fn host_with(scripts: usize, dir: &std::path::Path, store: Arc<Store>, traces: usize) -> ScriptHost {
    for i in 0..scripts {
        std::fs::write(
            dir.join(format!("s{i}.lua")),
            "agent.on('audioVideoSession', function(e) if e.seq % 100000 == 0 then agent.log.info('mark') end end)\n\
             agent.on('agent', 'bench', function(e) agent.log.info('done') end)\n",
        )
        .unwrap();
    }
    let settings = ScriptSettings { traces_per_script: traces, ..ScriptSettings::new(Limits::default()) };
    ScriptHost::with_env(dir.to_path_buf(), ScriptEnv::new(settings, store))
}

/// The CPU time this process has used so far (every thread, user and system).
fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(u.ru_utime) + tv(u.ru_stime)
}

async fn throughput(scripts: usize, batches: u64, per_batch: usize, on_disk: bool, traces: usize) -> f64 {
    throughput_cpu(scripts, batches, per_batch, on_disk, traces).await.0
}

/// Events per second of wall-clock time, and per second of the process's CPU time.
async fn throughput_cpu(scripts: usize, batches: u64, per_batch: usize, on_disk: bool, traces: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(if on_disk { Store::open(&dir.path().join("state")).unwrap() } else { Store::in_memory() });
    let host = host_with(scripts, dir.path(), store.clone(), traces);
    host.load_dir().await.unwrap();
    let mut out = host.subscribe();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    // 100 distinct bodies, cycled (the journal numbers events itself; making every body
    // would take longer than dispatching them).
    let bodies: Vec<Vec<u8>> = (1..=batches.min(100)).map(|a| batch_bytes(a, per_batch)).collect();
    let mut sink = sink_with_position(&host, store);
    let (started, cpu) = (Instant::now(), cpu_time());
    for body in bodies.iter().cycle().take(batches as usize) {
        let b = batch::parse(body, &origin).unwrap();
        let Continuation::Next(next) = b.continuation else { panic!() };
        sink.deliver(&origin, body, b.events, Some(&next)).unwrap();
    }
    let produced = started.elapsed();
    sink.synthetic("bench", serde_json::json!({}));
    let mut done = 0;
    while done < scripts {
        if let Ok(ScriptOutput::Log { message, .. }) = out.recv().await {
            if message == "done" {
                done += 1;
            }
        }
    }
    let (secs, cpu) = (started.elapsed().as_secs_f64(), (cpu_time() - cpu).as_secs_f64());
    if std::env::var_os("BENCH_DETAIL").is_some() {
        println!("  (producer side: {:.0} events/s)", (batches as usize * per_batch) as f64 / produced.as_secs_f64());
    }
    host.shutdown(Duration::from_secs(5)).await;
    let events = (batches as usize * per_batch) as f64;
    (events / secs, events / cpu)
}

async fn journal_latency(batches: u64) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state")).unwrap());
    let host = host_with(1, dir.path(), store.clone(), 0);
    host.load_dir().await.unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut sink = sink_with_position(&host, store);
    let mut times = Vec::with_capacity(batches as usize);
    for ack in 1..=batches {
        let body = batch_bytes(ack, 4);
        let t = Instant::now();
        let b = batch::parse(&body, &origin).unwrap();
        let Continuation::Next(next) = b.continuation else { panic!() };
        sink.deliver(&origin, &body, b.events, Some(&next)).unwrap();
        times.push(t.elapsed());
        if ack % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    host.shutdown(Duration::from_secs(5)).await;
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

/// Events per second of the Python loop over `batches` of the bodies in `file` (one per line),
/// of wall-clock time and of CPU time; None without a `python3`.
fn python_rate(file: &std::path::Path, batches: u64) -> Option<(f64, f64)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_loop.py");
    let out = std::process::Command::new("python3").arg(script).arg(file).arg(batches.to_string()).arg("--cpu").output().ok()?;
    if !out.status.success() {
        eprintln!("python loop failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (wall, cpu) = text.trim().split_once(' ')?;
    Some((wall.parse().ok()?, cpu.parse().ok()?))
}

/// Our 1-script case (journal on disk, `traces` per script) and the Python loop on the same
/// 100 bodies, in turns, `rounds` times: each round's pair and ratio, then the ranges.
async fn versus_python(rounds: usize, batches: u64, traces: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bodies.jsonl");
    let mut lines = Vec::new();
    for a in 1..=100 {
        lines.extend(batch_bytes(a, 100));
        lines.push(b'\n');
    }
    std::fs::write(&file, lines).unwrap();
    if python_rate(&file, 10).is_none() {
        println!("python loop: no python3 on PATH, comparison skipped");
        return;
    }
    let (mut ratios, mut cpu_ratios, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (py, py_cpu) = python_rate(&file, batches).unwrap_or((f64::NAN, f64::NAN));
        let (us, us_cpu) = throughput_cpu(1, batches, 100, true, traces).await;
        println!(
            "  round {round}: ucwa-agent {us:>8.0} events/s ({us_cpu:>7.0} per CPU-second), python loop {py:>8.0} events/s ({py_cpu:>7.0} per CPU-second): ratio {:.2} (CPU {:.2})",
            us / py,
            us_cpu / py_cpu
        );
        ours.push(us);
        theirs.push(py);
        ratios.push(us / py);
        cpu_ratios.push(us_cpu / py_cpu);
    }
    let range = |v: &[f64]| format!("{:.2}–{:.2}", v.iter().cloned().fold(f64::INFINITY, f64::min), v.iter().cloned().fold(0f64, f64::max));
    let rate = |v: &[f64]| format!("{:.0}–{:.0}", v.iter().cloned().fold(f64::INFINITY, f64::min), v.iter().cloned().fold(0f64, f64::max));
    println!(
        "1 script, journal on disk, traces {traces:>3} per script: ucwa-agent {} events/s, python loop {} events/s: ratio {} (per CPU-second: {})",
        rate(&ours),
        rate(&theirs),
        range(&ratios),
        range(&cpu_ratios)
    );
}

fn main() {
    // The agent's own subscriber (info level, human format), writing nowhere: what the agent
    // does per event for logging is part of the figure.
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::sink).init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("ucwa-agent pipeline bench ({} logical CPUs)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    rt.block_on(async {
        if let Ok(case) = std::env::var("BENCH_CASE") {
            // One case, longer, for a profiler: `BENCH_CASE=disk:1` (journal:scripts).
            // With traces off and on (100 per script), in turns (the machine may be noisy): the
            // best of three each, and what traces cost.
            // `BENCH_TRACES=0` (or `100`): only that setting, so that a profile holds one path.
            let only: Option<usize> = std::env::var("BENCH_TRACES").ok().map(|t| t.parse().expect("BENCH_TRACES=0 or 100"));
            let (journal, scripts) = case.split_once(':').expect("BENCH_CASE=disk:1 or memory:0");
            let scripts = scripts.parse().expect("a script count");
            // `BENCH_BATCHES=N`: one round of N batches each, and no Python loop: small enough to
            // count instructions per thread under `valgrind --tool=callgrind --separate-threads=yes`,
            // a figure this noisy machine does not move (BENCHMARKS.md, "Instructions per event").
            let counted: Option<u64> = std::env::var("BENCH_BATCHES").ok().map(|n| n.parse().expect("BENCH_BATCHES=<batches>"));
            let (mut off, mut on) = (0f64, 0f64);
            for _ in 0..if counted.is_some() { 1 } else { 3 } {
                let batches = counted.unwrap_or(5000);
                if only.is_none_or(|t| t == 0) {
                    off = off.max(throughput(scripts, batches, 100, journal == "disk", 0).await);
                }
                if only.is_none_or(|t| t != 0) {
                    on = on.max(throughput(scripts, batches, 100, journal == "disk", only.unwrap_or(100)).await);
                }
            }
            println!("{case}: {off:.0} events/s without traces; {on:.0} events/s with traces (100 per script): {:+.1} %", (on / off - 1.0) * 100.0);
            if case == "disk:1" && counted.is_none() {
                println!("against the Python loop (same bodies, in turns):");
                for traces in [0, 100].into_iter().filter(|t| only.is_none_or(|o| o == *t)) {
                    versus_python(3, 5000, traces).await;
                }
            }
            return;
        }
        // Warm-up (page cache, allocator, Lua).
        throughput(1, 50, 100, true, 0).await;
        for on_disk in [true, false] {
            for scripts in [0, 1, 10] {
                let rate = throughput(scripts, 1000, 100, on_disk, 0).await;
                let what = if scripts == 0 { "no script (parse + journal)".to_string() } else { format!("{scripts:>2} script(s)") };
                let journal = if on_disk { "journal on disk  " } else { "journal in memory" };
                println!("dispatch throughput, {journal}, {what:<26}, 100-event batches: {rate:>9.0} events/s");
                if on_disk && scripts > 0 {
                    let traced = throughput(scripts, 1000, 100, on_disk, 100).await;
                    let what = format!("{what}, traces on");
                    println!("dispatch throughput, {journal}, {what:<26}, 100-event batches: {traced:>9.0} events/s ({:+.1} %)", (traced / rate - 1.0) * 100.0);
                }
            }
        }
        println!("against the Python loop (same bodies, in turns):");
        // Rounds of 5,000 batches, as `BENCH_CASE=disk:1`'s: a round of 2,000 (0.3 s of ours)
        // was short enough for one stall of this shared machine to decide it.
        versus_python(3, 5000, 0).await;
        versus_python(3, 5000, 100).await;
        let (p50, p99) = journal_latency(10_000).await;
        println!(
            "batch arrival -> next poll ready (parse + journal + hand-over), 4-event batches: median {:>6.1} us, p99 {:>6.1} us",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    });
}
