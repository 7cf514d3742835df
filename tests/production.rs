//! The agent as a service manager and a scraper see it (issue 21): systemd's notify protocol on
//! a socket the test owns, journald priorities, a rejected reload visible in `/healthz` and
//! `/metrics`, the endpoints on any address with basic auth, signals during a slow start.
//! Every test runs the binary against an in-test simulator.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixDatagram;

/// A notify socket like systemd's: the messages the agent sends, in order.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        NotifySocket { socket: UnixDatagram::bind(&path).unwrap(), path }
    }

    /// The next message that contains `needle` (earlier ones are dropped); all it read so far.
    async fn until(&self, needle: &str, seen: &mut Vec<String>) -> String {
        let wait = async {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = self.socket.recv(&mut buf).await.unwrap();
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(m.clone());
                if m.contains(needle) {
                    return m;
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("no {needle:?} among {seen:?}"))
    }
}

async fn get(url: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    match req.send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        // Not listening yet.
        Err(_) => (0, String::new()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The value of one sample line of a metrics page (`name` with its labels, if any).
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_notify_protocol_says_ready_reloading_watchdog_and_stopping() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    let config = config_file(&sim, dir.path(), "");
    let notify = NotifySocket::bind(dir.path());
    let mut agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[]).env("NOTIFY_SOCKET", &notify.path).env("WATCHDOG_USEC", "1000000").spawn_guarded();
    let mut seen = Vec::new();
    let ready = notify.until("READY=1", &mut seen).await;
    assert!(ready.contains("STATUS=signed in and polling"), "{ready}");
    notify.until("WATCHDOG=1", &mut seen).await;
    signal(&agent, "-HUP");
    let reloading = notify.until("RELOADING=1", &mut seen).await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let done = notify.until("READY=1", &mut seen).await;
    assert!(done.contains("STATUS=configuration reloaded"), "{done}");
    // A configuration the agent rejects: the reload still ends (READY=1), saying so.
    std::fs::write(&config, "[server\n").unwrap();
    signal(&agent, "-HUP");
    notify.until("RELOADING=1", &mut seen).await;
    let rejected = notify.until("READY=1", &mut seen).await;
    assert!(rejected.contains("STATUS=configuration reload rejected") && rejected.contains("ERRNO="), "{rejected}");
    signal(&agent, "-TERM");
    notify.until("STOPPING=1", &mut seen).await;
    let (code, _) = exit_within(&mut agent, PATIENCE).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_broken_sighup_makes_healthz_degraded_and_the_metric_0_until_a_good_one() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    let port = free_port();
    let good = config_text(&sim, dir.path(), &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, &good).unwrap();
    let mut agent = spawn_agent(&config, std::process::Stdio::null());
    let base = format!("http://127.0.0.1:{port}");
    eventually_async("the agent polls", || async { get(&format!("{base}/healthz"), None).await.0 == 200 }).await;
    let page = get(&format!("{base}/metrics"), None).await.1;
    assert_eq!(sample(&page, "ucwa_config_last_reload_success"), Some(1.0), "{page}");
    let first_ok = sample(&page, "ucwa_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(first_ok > 1.7e9, "{first_ok}");
    for family in ["process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"] {
        assert!(sample(&page, family).is_some(), "{family}: {page}");
    }
    assert!(page.contains("ucwa_agent_build_info{version=\""), "{page}");

    // `check` before a reload (the units' ExecReload) passes while the agent holds its port.
    let out = agent_command(&["check", "--config", config.to_str().unwrap()], &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::write(&config, format!("{good}\nbogus = [\n")).unwrap();
    signal(&agent, "-HUP");
    eventually_async("the rejected reload shows", || async {
        sample(&get(&format!("{base}/metrics"), None).await.1, "ucwa_config_last_reload_success") == Some(0.0)
    })
    .await;
    let (code, health) = get(&format!("{base}/healthz"), None).await;
    assert_eq!(code, 200, "the agent still polls on the running configuration: {health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(health["warnings"].to_string().contains("configuration reload rejected"), "{health}");
    assert!(health["warnings"].to_string().contains("agent.toml"), "the reason names the file: {health}");
    let page = get(&format!("{base}/metrics"), None).await.1;
    assert_eq!(sample(&page, "ucwa_config_last_reload_success_timestamp_seconds"), Some(first_ok), "the last success's time stays");

    std::fs::write(&config, &good).unwrap();
    signal(&agent, "-HUP");
    eventually_async("the good reload shows", || async {
        sample(&get(&format!("{base}/metrics"), None).await.1, "ucwa_config_last_reload_success") == Some(1.0)
    })
    .await;
    let health: serde_json::Value = serde_json::from_str(&get(&format!("{base}/healthz"), None).await.1).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    agent.kill().unwrap();
}

#[tokio::test]
async fn metrics_answer_on_any_address_and_ask_for_credentials_when_basic_auth_is_set() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    let port = free_port();
    // Cost 4: the lowest bcrypt allows, so the test is quick; admins use 10 or more.
    let hash = bcrypt::hash("scrape-me", 4).unwrap();
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"0.0.0.0:{port}\"\nbasic_auth_users = {{ prometheus = \"{hash}\" }}"));
    let mut agent = spawn_agent(&config, std::process::Stdio::null());
    // A non-loopback address of this host when it has one (a scraper on another host comes in
    // there); loopback reaches 0.0.0.0 too.
    let host = non_loopback_ip().unwrap_or_else(|| "127.0.0.1".into());
    let base = format!("http://{host}:{port}");
    eventually_async("the endpoint answers", || async { reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().as_u16() == 401) }).await;
    for path in ["/", "/metrics", "/healthz"] {
        assert_eq!(get(&format!("{base}{path}"), None).await.0, 401, "{path} without credentials");
        assert_eq!(get(&format!("{base}{path}"), Some(("prometheus", "wrong"))).await.0, 401, "{path} with a wrong password");
    }
    // (The endpoint answers while the account still opens: its families come once it has.)
    eventually_async("polling", || async { get(&format!("{base}/healthz"), Some(("prometheus", "scrape-me"))).await.0 == 200 }).await;
    let (code, page) = get(&format!("{base}/metrics"), Some(("prometheus", "scrape-me"))).await;
    assert_eq!(code, 200);
    assert!(page.contains("ucwa_up"), "{page}");
    agent.kill().unwrap();
    agent.wait().unwrap();

    // Without users on a non-loopback listener, /healthz gives the status but no details.
    let port = free_port();
    let config = config_file(&sim, dir.path(), &format!("[metrics]\nlisten = \"0.0.0.0:{port}\""));
    let mut agent = spawn_agent(&config, std::process::Stdio::null());
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually_async("polling", || async { get(&url, None).await.0 == 200 }).await;
    let body: serde_json::Value = serde_json::from_str(&get(&url, None).await.1).unwrap();
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["state", "status"], "{body}");
    agent.kill().unwrap();
}

/// An address of this host other than loopback, if it has one.
fn non_loopback_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

#[tokio::test]
async fn error_lines_carry_journald_priorities_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("journal");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    // A configuration with an error: one ERROR line, then exit 2.
    std::fs::write(dir.path().join("bad.toml"), "[server]\ndiscover = 7\n").unwrap();
    let status = agent_command(&["run", "--config", dir.path().join("bad.toml").to_str().unwrap()], &[])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("<3>") && first.contains("ERROR"), "{text}");
    assert!(text.lines().count() > 1 && text.lines().all(|l| l.starts_with("<3>")), "every line of a multi-line error: {text}");
    // Not the journal: no prefix.
    let out = agent_command(&["run", "--config", dir.path().join("bad.toml").to_str().unwrap()], &[]).env("JOURNAL_STREAM", "1:2").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.starts_with('<') && text.contains("ERROR"), "{text}");
}

#[tokio::test]
async fn sighup_and_sigterm_during_a_slow_start_are_not_fatal() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // A top level that takes about two seconds: the agent is still loading when signalled.
    write(dir.path(), "slow.lua", "local t = os.clock() while os.clock() - t < 2 do end\nagent.on('audioVideoSession', function() end)");
    let extra = "instruction_limit = 1000000000000\nhandler_timeout_ms = 60000\n[metrics]\nlisten = \"127.0.0.1:0\"";
    let config = config_file(&sim, dir.path(), extra);
    let notify = NotifySocket::bind(dir.path());
    let mut agent = agent_command(&["run", "--config", config.to_str().unwrap()], &[]).env("NOTIFY_SOCKET", &notify.path).spawn_guarded();
    let mut seen = Vec::new();
    notify.until("STATUS=starting", &mut seen).await;
    signal(&agent, "-HUP");
    // Still alive, then ready, then the SIGHUP that came during start-up is applied.
    notify.until("READY=1", &mut seen).await;
    assert!(agent.try_wait().unwrap().is_none(), "SIGHUP during start-up killed the agent");
    notify.until("STATUS=configuration reloaded", &mut seen).await;
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));

    // SIGTERM while loading: a clean stop, exit 0.
    let second = dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let notify = NotifySocket::bind(&second);
    let mut agent = agent_command(&["run", "--config", config.to_str().unwrap()], &[]).env("NOTIFY_SOCKET", &notify.path).spawn_guarded();
    let mut seen = Vec::new();
    notify.until("STATUS=starting", &mut seen).await;
    signal(&agent, "-TERM");
    notify.until("STOPPING=1", &mut seen).await;
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0), "SIGTERM during start-up: a clean stop");
}

/// Waits until the async condition holds.
async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let wait = async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn metrics_are_served_over_https_with_the_configured_certificate() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let port = free_port();
    let config = config_file(
        &sim,
        dir.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            tls.join("sim.pem").display(),
            tls.join("sim.key").display()
        ),
    );
    let mut agent = spawn_agent(&config, std::process::Stdio::null());
    // The test CA signed the certificate for 127.0.0.1 and localhost.
    let https = test_http();
    let url = format!("https://127.0.0.1:{port}/metrics");
    // (Until the account has started, the page has only the process's own families.)
    let answered = || async {
        let Ok(r) = https.get(&url).send().await else { return false };
        r.status().is_success() && r.text().await.is_ok_and(|page| page.contains("ucwa_up"))
    };
    eventually_async("HTTPS answers, with the account's metrics", answered).await;
    let page = https.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("ucwa_up"), "{page}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/metrics"), None).await.0, 0, "no plain HTTP answer");
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Half a pair, or a key that is not one: the key at fault is named, exit 2.
    for (extra, key) in [
        (format!("[metrics]\ntls_cert_file = \"{}\"", tls.join("sim.pem").display()), "metrics.tls_key_file"),
        (
            format!("[metrics]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"", tls.join("sim.pem").display(), tls.join("ca.pem").display()),
            "metrics.tls_key_file",
        ),
    ] {
        let config = config_file(&sim, dir.path(), &extra);
        let out = agent_command(&["check", "--config", config.to_str().unwrap()], &[]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains(key), "{key}: {text}");
    }
}

#[tokio::test]
async fn a_password_rotated_by_sighup_keeps_the_endpoint_on_its_address() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "quiet.lua", "agent.on('audioVideoSession', function() end)");
    let port = free_port();
    let with = |password: &str| {
        let hash = bcrypt::hash(password, 4).unwrap();
        config_text(&sim, dir.path(), &format!("[metrics]\nlisten = \"0.0.0.0:{port}\"\nbasic_auth_users = {{ prometheus = \"{hash}\" }}"))
    };
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, with("old-pw")).unwrap();
    let mut agent = spawn_agent(&config, std::process::Stdio::null());
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually_async("polling", || async { get(&url, Some(("prometheus", "old-pw"))).await.0 == 200 }).await;
    std::fs::write(&config, with("new-pw")).unwrap();
    signal(&agent, "-HUP");
    eventually_async("the new password", || async { get(&url, Some(("prometheus", "new-pw"))).await.0 == 200 }).await;
    assert_eq!(get(&url, Some(("prometheus", "old-pw"))).await.0, 401, "the old password is refused");
    // On a listener anyone can reach, per-account health tells nothing about which names exist.
    let port2 = free_port();
    std::fs::write(&config, config_text(&sim, dir.path(), &format!("[metrics]\nlisten = \"0.0.0.0:{port2}\""))).unwrap();
    signal(&agent, "-HUP");
    let base = format!("http://127.0.0.1:{port2}");
    eventually_async("the new address", || async { get(&format!("{base}/healthz"), None).await.0 == 200 }).await;
    assert_eq!(get(&format!("{base}/healthz/default"), None).await.0, 404);
    assert_eq!(get(&format!("{base}/healthz/nobody"), None).await.0, 404);
    agent.kill().unwrap();
    agent.wait().unwrap();
}
