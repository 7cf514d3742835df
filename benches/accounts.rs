//! The cost of an account, printed (no assertions): `cargo bench --bench accounts`.
//!
//! The simulator runs in this process with N users; the real `ucwa-agent` binary runs N
//! `[[account]]`s against it (each with the same one-script directory), with the shipped
//! defaults (180 s long polls, keep-alive every 180 s). Measured on the agent's process alone:
//!
//! - sign-in: from the process start until every account's application is available with
//!   its event-channel request parked on the simulator;
//! - idle RSS, after the accounts settled, with N = 1 and N = `ACCOUNTS` (default 1000): the
//!   difference over N − 1 is the cost of one more account;
//! - idle CPU: the agent's user + system time over `IDLE_SECS` (default 30 s), in % of one core;
//!   `IDLE_WINDOWS=2` measures a second window of the same length right after the first: with
//!   `IDLE_SECS=200` the first holds the accounts' first protocol cycle (each long poll coming
//!   back and its keep-alive, once; `position.json` created), the second a later one, the
//!   steady state of an agent that has run for a while (the 1-account run keeps one window);
//! - its threads (and how many are Lua workers) and open files, at the end.
//!
//! `ACCOUNTS=200 IDLE_SECS=10 cargo bench --bench accounts` for a quicker run;
//! `AGENT_BIN=path/to/ucwa-agent` measures another build (an older one, to compare; give it
//! `SHARDS` if it needs more files per account than this one); `OPEN_DATABASES=N` sets the
//! agents' `state.open_databases`.
//!
//! Each account keeps several files open (`agent::open_files`), and the simulator here holds the
//! other end of each connection: the bench raises its open files limit (inherited by the agent)
//! to what N accounts need, as far as it may (root with CAP_SYS_RESOURCE: past the hard limit).
//! When that is still too low for one agent, the accounts are split into as many agents (the
//! same configuration, `--shard K/N`) as the limit needs, as an admin would, and the figures
//! are their sums (`SHARDS` sets the number).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use ucwa_agent::sim::{SimConfig, Simulator};

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12) // utime, stime (fields 14 and 15 of stat)
}

fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The process's threads whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))).count())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Raises this process's open files limit (the agent inherits it) to `want`, as far as it may.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let wanted = libc::rlimit { rlim_cur: want.max(lim.rlim_cur), rlim_max: want.max(lim.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            // Not allowed past the hard limit: up to it.
            let up = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &up);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Applications available with a parked P-GET.
async fn ready(sim: &Simulator) -> usize {
    let url = format!("{}/sim/v1/applications", sim.origin());
    let Ok(r) = reqwest::get(&url).await else {
        return 0;
    };
    let apps: serde_json::Value = r.json().await.unwrap_or_default();
    apps.as_array().map_or(0, |a| a.iter().filter(|a| a["available"] == true && a["pollParked"] == true).count())
}

struct Figures {
    sign_in: Duration,
    rss_kib: u64,
    /// One per idle window.
    cpu_percent: Vec<f64>,
    threads: u64,
    workers: usize,
    files: usize,
}

async fn run(n: usize, idle: Duration, windows: usize, shards: usize) -> Figures {
    let users: Vec<(String, String)> = (0..n).map(|i| (format!("user{i}@contoso.com"), "demo".to_string())).collect();
    let sim = Simulator::start(SimConfig { users, ..SimConfig::default() }, ([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/calls.lua"), "agent.on('audioVideoSession', function(e) agent.log.info(e.type) end)\n").unwrap();
    let mut text = "[scripts]\ndir = \"scripts\"\n[state]\ndir = \"state\"\n".to_string();
    if let Ok(open) = std::env::var("OPEN_DATABASES") {
        text.push_str(&format!("open_databases = {open}\n"));
    }
    for i in 0..n {
        text.push_str(&format!(
            "[[account]]\nname = \"a{i}\"\ndiscover = \"{}\"\n[account.auth]\nkind = \"password\"\nusername = \"user{i}@contoso.com\"\npassword_env = \"BENCH_PASSWORD\"\n",
            sim.discovery_url()
        ));
    }
    std::fs::write(dir.path().join("config.toml"), text).unwrap();
    let started = Instant::now();
    let bin = std::env::var("AGENT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ucwa-agent").to_string());
    let mut children: Vec<_> = (0..shards)
        .map(|k| {
            let mut c = Command::new(&bin);
            if shards > 1 {
                c.arg("--shard").arg(format!("{k}/{shards}"));
            }
            c.current_dir(dir.path()).env("BENCH_PASSWORD", "demo").env("RUST_LOG", "warn").stderr(Stdio::inherit()).stdout(Stdio::null()).spawn().unwrap()
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    while ready(&sim).await < n {
        assert!(started.elapsed() < Duration::from_secs(600), "{} of {n} accounts signed in after 10 minutes", ready(&sim).await);
        for child in &mut children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("an agent exited: {status}");
            }
        }
        // (Not more often: the list of 10,000 applications is 2 MB of JSON, made by the same
        // simulator the agents sign in to.)
        tokio::time::sleep(Duration::from_millis(if n > 1000 { 1000 } else { 100 })).await;
    }
    let sign_in = started.elapsed();
    // Settle: scripts' first commits, the allocator's first returns.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ticks = || pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let mut cpu_percent = Vec::new();
    for _ in 0..windows {
        let before = ticks();
        let t0 = Instant::now();
        tokio::time::sleep(idle).await;
        cpu_percent.push((ticks() - before) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0);
    }
    let figures = Figures {
        sign_in,
        rss_kib: pids.iter().map(|&p| rss_kib(p)).sum(),
        cpu_percent,
        threads: pids.iter().map(|&p| threads(p)).sum(),
        workers: pids.iter().map(|&p| threads_named(p, "lua-worker")).sum(),
        files: pids.iter().map(|&p| open_files(p)).sum(),
    };
    for (pid, child) in pids.iter().zip(&mut children) {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        let _ = child.wait();
    }
    sim.shutdown().await;
    figures
}

/// Each window's idle CPU: `2.25 %`, or `2.25 % then 1.90 %`.
fn percents(p: &[f64]) -> String {
    p.iter().map(|c| format!("{c:.2} %")).collect::<Vec<_>>().join(" then ")
}

fn main() {
    let n = env_num("ACCOUNTS", 1000) as usize;
    let idle = Duration::from_secs(env_num("IDLE_SECS", 30));
    let windows = env_num("IDLE_WINDOWS", 1).max(1) as usize;
    println!("ucwa-agent accounts bench ({} logical CPUs), {n} accounts, one script each", std::thread::available_parallelism().map_or(0, |c| c.get()));
    // Each account: its files and connections in the agent, the other ends of them here.
    let limit = raise_open_files(256 + 16 * n as u64);
    // What one agent may hold: its accounts' files (agent::open_files) within the limit.
    let open_dbs = env_num("OPEN_DATABASES", ucwa_agent::store::DEFAULT_OPEN_DATABASES as u64);
    let fit = (1..=n).rev().find(|&k| ucwa_agent::agent::open_files::needed(k, open_dbs) <= limit).unwrap_or(1);
    let shards = env_num("SHARDS", n.div_ceil(fit) as u64).max(1) as usize;
    println!("open files limit: {limit} (about {fit} accounts per agent process)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let one = rt.block_on(run(1, idle, 1, 1));
    println!(
        "1 account: RSS {} KiB, {} threads ({} Lua workers), {} open files, idle CPU {} of one core, signed in after {:.2} s",
        one.rss_kib,
        one.threads,
        one.workers,
        one.files,
        percents(&one.cpu_percent),
        one.sign_in.as_secs_f64()
    );
    let many = rt.block_on(run(n, idle, windows, shards));
    println!(
        "{n} accounts{}: RSS {} KiB, {} threads ({} Lua workers), {} open files, idle CPU {} of one core, all signed in after {:.2} s",
        if shards > 1 { format!(" in {shards} agents (--shard K/{shards})") } else { String::new() },
        many.rss_kib,
        many.threads,
        many.workers,
        many.files,
        percents(&many.cpu_percent),
        many.sign_in.as_secs_f64()
    );
    let per = many.rss_kib.saturating_sub(one.rss_kib) as f64 / (n.max(2) - 1) as f64;
    let files = many.files.saturating_sub(one.files) as f64 / (n.max(2) - 1) as f64;
    println!("per account: {per:.0} KiB of RSS, {files:.1} open files (the difference over {} accounts)", n.max(2) - 1);
}
