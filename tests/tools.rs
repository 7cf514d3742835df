//! The script authors' commands, run as a user runs them: the binary, real files.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn agent(args: &[&str], cwd: &Path) -> Output {
    // Bounded: a regression that lets `run` start (it is given bad configurations here) fails
    // the test instead of running the embedded demo for ever.
    output_bounded(Command::new(env!("CARGO_BIN_EXE_ucwa-agent")).args(args).current_dir(cwd).env_remove("RUST_LOG").stdin(Stdio::null()), PATIENCE)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn project(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("config.toml"), "[scripts]\ndir = \"scripts\"\nhttp_allow = [\"hooks.example.com\"]\n").unwrap();
    for (name, src) in scripts {
        std::fs::write(dir.path().join("scripts").join(name), src).unwrap();
    }
    dir
}

#[test]
fn the_shipped_script_tests_and_example_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["scripts", "examples"] {
        let o = agent(&["test", dir], root);
        let t = text(&o);
        assert!(o.status.success(), "{dir}: {t}");
        assert!(t.starts_with("TAP version 13") && t.contains(" passed, 0 failed") && !t.contains("not ok"), "{t}");
    }
}

#[test]
fn a_failing_test_fails_the_run_and_says_where() {
    let p = project(&[
        ("rule.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('hi') end)\n"),
        ("rule_test.lua", "test.load('rule.lua')\ntest.case('wrong', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\n  test.eq(test.logs()[1].message, 'bye')\nend)\ntest.case('right', function() test.ok(true) end)\n"),
    ]);
    let o = agent(&["test"], p.path());
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("not ok 1 - wrong") && t.contains("rule_test.lua:4: expected \"bye\", got \"hi\"") && t.contains("ok 2 - right"), "{t}");
    assert!(t.contains("1 passed, 1 failed"), "{t}");
}

#[test]
fn check_reports_each_problem_with_file_and_line() {
    let p = project(&[
        ("good.lua", "agent.on('audioVideoSession', function(e) end)\n"),
        ("typo.lua", "-- a typo in the rel\n\nagent.on('audioVideoSesion', 'added', function(e) end)\nagent.on('conversation', 'removed', function(e) end)\nagent.on('audioVideoInvitation', 'added', function(e) end)\n"),
        ("broken.lua", "agent.on('conversation', function(e)\n  if then\nend)\n"),
        ("boom.lua", "local t = nil\nprint(t.x)\n"),
        ("helper_test.lua", "this file is a test, not a script"),
    ]);
    let o = agent(&["check"], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("scripts/broken.lua:2: error: syntax error: unexpected symbol near 'then'"), "{t}");
    assert!(t.contains("scripts/boom.lua:2: error: attempt to index a nil value"), "{t}");
    assert!(t.contains("scripts/typo.lua:3: warning: agent.on: `audioVideoSesion` is not an event rel UCWA sends (did you mean `audioVideoSession`?)"), "{t}");
    assert!(t.contains("scripts/typo.lua:4: warning: agent.on: `removed` is not an event type"), "{t}");
    assert!(t.contains("ok: good (1 subscription)") && !t.contains("helper_test"), "{t}");
    assert!(
        t.contains("scripts/typo.lua:5: warning: agent.on: UCWA sends `audioVideoInvitation` events of type `started`, `updated`, `completed`, never `added`"),
        "{t}"
    );
    assert!(t.contains("2 script(s) loaded, 2 error(s), 3 warning(s)"), "{t}");

    let clean = project(&[("good.lua", "agent.on('audioVideoSession', function(e) end)\n")]);
    assert!(agent(&["check"], clean.path()).status.success());
    std::fs::write(clean.path().join("config.toml"), "[scripts]\ndri = \"x\"\n").unwrap();
    let o = agent(&["check"], clean.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("config.toml") && text(&o).contains("unknown field `dri`"), "{}", text(&o));

    // What `run` needs besides the file: status 2 with the key, as `run` would stop.
    std::fs::write(
        clean.path().join("config.toml"),
        "[auth]\nkind = \"password\"\nusername = \"a@b.c\"\npassword_env = \"UCWA_AGENT_TEST_UNSET\"\n[scripts]\ndir = \"nosuch\"\n",
    )
    .unwrap();
    let o = agent(&["check"], clean.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("`auth.password_env`: the environment variable `UCWA_AGENT_TEST_UNSET` is not set (it must hold the password)"), "{t}");
    assert!(t.contains("`scripts.dir`: cannot read") && t.contains("nosuch"), "{t}");
    let o = agent(&["run"], clean.path());
    assert_eq!(o.status.code(), Some(2), "run stops at the same place: {}", text(&o));
}

const REPLAYED: &str = r#"
agent.on("audioVideoSession", function(e)
  agent.state.n = (agent.state.n or 0) + 1
  agent.log.info(e.type .. " at " .. agent.now())
  if e.type == "added" then
    agent.http.request{method = "POST", url = "https://hooks.example.com/call", body = {href = e.href}}
    local r = agent.ucwa.get(e.href)
    agent.log.info("GET " .. r.status)
  end
end)
"#;

#[test]
fn replay_is_deterministic_and_reports_bad_lines() {
    let p = project(&[("replayed.lua", REPLAYED), ("quiet.lua", "agent.on('me', function(e) end)\n")]);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let first = agent(&["replay", samples.to_str().unwrap()], p.path());
    let t = text(&first);
    assert!(first.status.success(), "{t}");
    let expected_start = "== quiet (";
    assert!(t.starts_with(expected_start), "scripts in name order: {t}");
    assert!(
        t.contains("#2 audioVideoSession added https://fe1.contoso.com/ucwa/v1/applications/192/communication/conversations/137/audioVideo/audioVideoSession"),
        "{t}"
    );
    assert!(t.contains("  info: added at 1767225602000"), "the clock moves one second per batch: {t}");
    assert!(t.contains("  would send (http): POST https://hooks.example.com/call {\"href\":"), "{t}");
    assert!(t.contains("  info: GET 404"), "no embedded resource in the samples: {t}");
    assert!(t.contains("  state: {\"n\":3}"), "{t}");
    let second = agent(&["replay", samples.to_str().unwrap()], p.path());
    assert_eq!(first.stdout, second.stdout, "same file, same output");
    let only = agent(&["replay", samples.to_str().unwrap(), "--script", "quiet"], p.path());
    assert!(!text(&only).contains("replayed"), "{}", text(&only));

    let bad = p.path().join("bad.jsonl");
    let mut lines = std::fs::read_to_string(&samples).unwrap();
    lines.push_str("{\"_links\": {\"self\"\n\n[1,2]\n");
    std::fs::write(&bad, lines).unwrap();
    let o = agent(&["replay", bad.to_str().unwrap()], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("bad.jsonl:6: not an event-channel batch") && t.contains("bad.jsonl:8: not an event-channel batch"), "{t}");
    let missing = agent(&["replay", "nowhere.jsonl"], p.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("nowhere.jsonl"), "{}", text(&missing));
    let unknown = agent(&["replay", samples.to_str().unwrap(), "--script", "nosuch"], p.path());
    assert_eq!(unknown.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_a_real_session() {
    let sim = start_sim(sim_config()).await;
    let p = project(&[("replayed.lua", REPLAYED)]);
    std::fs::write(p.path().join("config.toml"), config_text(&sim, &p.path().join("scripts"), "http_allow = [\"hooks.example.com\"]")).unwrap();
    let recording = p.path().join("session.jsonl");
    let mut child = agent_command(&["record", recording.to_str().unwrap()], &[]).current_dir(p.path()).stderr(Stdio::null()).spawn_guarded();
    wait_available(&sim).await;
    let c = sim.start_call(answered_call()).unwrap();
    // (recorded compactly, keys in order: `link` {href, rel}, then `type`)
    file_contains(&recording, "\"rel\":\"audioVideoSession\"},\"type\":\"updated\"").await;
    sim.end_call(c);
    file_contains(&recording, "\"rel\":\"audioVideoSession\"},\"type\":\"deleted\"").await;
    signal(&child, "-TERM");
    assert_eq!(exit_within(&mut child, PATIENCE).await.0, Some(0));
    let recorded = std::fs::read_to_string(&recording).unwrap();
    assert!(recorded.lines().count() >= 3 && recorded.lines().all(|l| l.starts_with('{')), "{recorded}");
    let o = agent(&["replay", recording.to_str().unwrap()], p.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("audioVideoSession added https://pool.replay.invalid/ucwa/oauth/v1/applications/"), "{t}");
    assert!(t.contains("  info: GET 200"), "the embedded session answers agent.ucwa.get: {t}");
    assert!(t.contains("audioVideoSession deleted"), "{t}");
}

#[test]
fn replay_of_a_big_batch_reports_every_event() {
    // 2,000 events in one batch: three output lines each (event, log, state), more than the
    // output stream buffers; none may go missing.
    let counter = "agent.on('audioVideoSession', function(e) agent.state.n = (agent.state.n or 0) + 1 agent.log.info('n ' .. agent.state.n) end)\n";
    let p = project(&[("counter.lua", counter)]);
    let events: Vec<serde_json::Value> = (0..2000)
        .map(|i| serde_json::json!({"link": {"rel": "audioVideoSession", "href": format!("/ucwa/v1/applications/1/communication/conversations/{i}/audioVideo/audioVideoSession")}, "type": "added"}))
        .collect();
    let batch = serde_json::json!({"_links": {"next": {"href": "/ucwa/v1/applications/1/events?ack=2"}}, "sender": [{"rel": "communication", "href": "/ucwa/v1/applications/1/communication", "events": events}]});
    let file = p.path().join("big.jsonl");
    std::fs::write(&file, format!("{batch}\n")).unwrap();
    let o = agent(&["replay", file.to_str().unwrap()], p.path());
    let t = text(&o);
    assert!(o.status.success(), "{}", &t[..t.len().min(2000)]);
    for n in [1, 1000, 2000] {
        assert!(t.contains(&format!("  info: n {n}\n")), "line for event {n} missing");
    }
    assert_eq!(t.matches("  info: n ").count(), 2000);
    assert_eq!(t.matches("audioVideoSession added").count(), 2000);
}

#[test]
fn replay_reports_ucwa_requests_fires_timers_and_keeps_the_allowlist() {
    let script = r#"
      agent.after(500, function() agent.log.info("timer fired") end)
      agent.on("audioVideoInvitation", "started", function(e)
        agent.ucwa.post(e.href .. "/decline", {reason = "Local"})
        local ok, err = pcall(agent.http.request, {url = "https://not-allowed.example/x"})
        agent.log.info(err)
      end)
    "#;
    let p = project(&[("acting.lua", script)]);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let o = agent(&["replay", samples.to_str().unwrap()], p.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("would send (ucwa): POST https://fe1.contoso.com/ucwa/v1/applications/192/communication/invitations/507/decline {\"reason\":\"Local\"}"),
        "{t}"
    );
    assert!(t.contains("not-allowed.example is not in scripts.http_allow"), "the allowlist holds offline too: {t}");
    assert!(t.contains("info: timer fired"), "the clock moves a second per batch and timers fire: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_record_writes_the_batches_and_simulate_serves_a_pool() {
    // `run --record FILE` records as `record FILE` does.
    let sim = start_sim(sim_config()).await;
    let p = project(&[("replayed.lua", REPLAYED)]);
    std::fs::write(p.path().join("config.toml"), config_text(&sim, &p.path().join("scripts"), "")).unwrap();
    let recording = p.path().join("run.jsonl");
    let mut child = agent_command(&["run", "--record", recording.to_str().unwrap()], &[]).current_dir(p.path()).stderr(Stdio::null()).spawn_guarded();
    wait_available(&sim).await;
    let c = sim.start_call(answered_call()).unwrap();
    file_contains(&recording, "\"rel\":\"audioVideoSession\"},\"type\":\"added\"").await;
    sim.end_call(c);
    signal(&child, "-TERM");
    assert_eq!(exit_within(&mut child, PATIENCE).await.0, Some(0));

    // `simulate`: the simulator alone, on the address given, with its control API.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut simulate =
        agent_command(&["simulate", "--listen", &format!("127.0.0.1:{port}"), "--calls-per-minute", "0"], &[]).stderr(Stdio::null()).spawn_guarded();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut answered = false;
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{base}/autodiscover/autodiscoverservice.svc/root")).send().await {
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(body["_links"]["user"]["href"].as_str().unwrap().starts_with(&base), "{body}");
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "simulate answers discovery");
    let counters: serde_json::Value = http.get(format!("{base}/sim/v1/counters")).send().await.unwrap().json().await.unwrap();
    assert_eq!(counters["calls_started"], 0, "--calls-per-minute 0: no generated calls");
    signal(&simulate, "-TERM");
    assert!(exit_within(&mut simulate, PATIENCE).await.0.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_takes_the_simulator_section_and_serves_https_with_a_certificate_given() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("[simulator]\nlisten = \"127.0.0.1:{port}\"\ncalls_per_minute = 30\ncall_duration_secs = 4\n")).unwrap();
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let (cert, key) = (tls.join("sim.pem"), tls.join("sim.key"));
    let args =
        ["simulate", "--config", config.to_str().unwrap(), "--ring-secs", "1.5", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let mut simulate = agent_command(&args, &[]).stderr(Stdio::null()).spawn_guarded();
    let base = format!("https://127.0.0.1:{port}");
    let http = test_http();
    let mut settings = serde_json::Value::Null;
    let ready = std::time::Instant::now();
    while settings.is_null() && ready.elapsed() < PATIENCE {
        match http.get(format!("{base}/sim/v1/settings")).send().await {
            Ok(r) => settings = r.json().await.unwrap(),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // The file's keys, the flag over the file, the embedded simulator's default for the rest.
    assert_eq!(settings["origin"], base.as_str(), "{settings}");
    assert_eq!((settings["calls_per_minute"].as_f64(), settings["ring_secs"].as_f64()), (Some(30.0), Some(1.5)), "{settings}");
    assert_eq!(settings["call_duration_secs"].as_f64(), Some(4.0), "{settings}");
    assert_eq!(settings["users"], serde_json::json!(["demo@contoso.com"]), "{settings}");
    signal(&simulate, "-TERM");
    assert_eq!(exit_within(&mut simulate, PATIENCE).await.0, Some(0));

    // Without a config file: the embedded defaults. A key that is not PEM: status 2, file named.
    let defaults = ucwa_agent::config::SimulatorConfig::default();
    assert_eq!((defaults.calls_per_minute, defaults.call_duration_secs), (6.0, 8.0));
    let out = agent_command(
        &["simulate", "--config", "/nonexistent.toml", "--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", config.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(config.to_str().unwrap()) && stderr.contains("private key"), "{stderr}");
}

#[test]
fn the_tools_take_files_and_directories_and_say_what_is_wrong() {
    let p = project(&[
        ("rule.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('hi') end)\n"),
        ("rule_test.lua", "test.load('rule.lua')\ntest.case('logs', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\n  test.eq(test.logs()[1].message, 'hi')\nend)\n"),
    ]);
    std::fs::create_dir(p.path().join("empty")).unwrap();
    // A test file named directly, and a directory: both run.
    let o = agent(&["test", "scripts/rule_test.lua"], p.path());
    assert!(o.status.success() && text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    let o = agent(&["test", "scripts", "scripts/rule_test.lua"], p.path());
    assert!(o.status.success() && text(&o).contains("2 passed, 0 failed"), "{}", text(&o));
    // No tests: status 1 and why. A path that is not there: status 2.
    let o = agent(&["test", "empty"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no test files (`*_test.lua`) in empty"), "{}", text(&o));
    let o = agent(&["test", "nosuch_test.lua"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nosuch_test.lua: no such file or directory"), "{}", text(&o));
    // A FIFO named as a test, given or found in a directory, fails at once (a read would wait
    // for a writer for ever).
    std::fs::create_dir(p.path().join("piped")).unwrap();
    assert!(Command::new("mkfifo").arg(p.path().join("piped/pipe_test.lua")).status().unwrap().success());
    for arg in ["piped", "piped/pipe_test.lua"] {
        let started = std::time::Instant::now();
        let o = agent(&["test", arg], p.path());
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("piped/pipe_test.lua: not a regular file (a FIFO, socket or device), not a test file"), "{}", text(&o));
        assert!(started.elapsed() < Duration::from_secs(30), "at once: {:?}", started.elapsed());
    }
    // So does a test that loads a FIFO as its script.
    std::fs::create_dir(p.path().join("loads")).unwrap();
    assert!(Command::new("mkfifo").arg(p.path().join("loads/pipe.lua")).status().unwrap().success());
    std::fs::write(p.path().join("loads/pipe_test.lua"), "test.load('pipe.lua')\ntest.case('x', function() end)\n").unwrap();
    let started = std::time::Instant::now();
    let o = agent(&["test", "loads"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("test.load(pipe.lua): not a regular file (a FIFO, socket or device), not a script"), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(30), "at once: {:?}", started.elapsed());
    // A broken configuration is not silently replaced by the defaults.
    let config = std::fs::read_to_string(p.path().join("config.toml")).unwrap();
    std::fs::write(p.path().join("config.toml"), format!("{config}bogus = 1\n")).unwrap();
    let o = agent(&["test"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bogus"), "{}", text(&o));
    std::fs::write(p.path().join("config.toml"), config).unwrap();
    // A file that is not a recording and does not end its line is read no further than a
    // batch can be long (`replay /dev/zero` grew without end).
    std::fs::write(p.path().join("zeros"), vec![0u8; (64 << 20) + 1]).unwrap();
    let o = agent(&["replay", "zeros"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("zeros: line 1 is longer than 64 MiB: not a recording of event-channel batches"), "{}", text(&o));
    std::fs::remove_file(p.path().join("zeros")).unwrap();
    // `replay --script` with a name that is not a script: the flag is blamed, the scripts listed.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let o = agent(&["replay", samples.to_str().unwrap(), "--script", "nosuch"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--script nosuch: no script `nosuch.lua`") && text(&o).contains("there are: rule"), "{}", text(&o));
    // Every argument and option of every command has a help text (on its line, or on the next,
    // further indented, when clap puts long help below).
    for command in ["run", "record", "check", "replay", "test", "simulate"] {
        let help = text(&agent(&[command, "--help"], p.path()));
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // An argument (`  <FILE>`, `  [FILE|DIR]...`) or an option (`  -h, --help`, `      --listen <LISTEN>`);
            // not the lines of a help text below one (deeper, or a `- value:` list).
            let indent = line.len() - line.trim_start().len();
            let t = line.trim_start();
            let item = (indent == 2 && (t.starts_with('<') || t.starts_with('[')))
                || (indent <= 6 && (t.starts_with("--") || t.starts_with("-h") || t.starts_with("-V")));
            if !item {
                continue;
            }
            let inline = line.trim().split_once("  ").is_some_and(|(_, h)| !h.trim().is_empty());
            let below = lines.get(i + 1).is_some_and(|n| n.len() - n.trim_start().len() > indent && !n.trim().is_empty());
            assert!(inline || below, "`{command}`: no help for {line:?}:\n{help}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_walks_the_sign_in_and_stops_at_the_failing_step() {
    let sim = start_sim(sim_config()).await;
    let p = project(&[("good.lua", "agent.on('audioVideoSession', function(e) end)\n")]);
    let online = |password: &str, config: &str| {
        std::fs::write(p.path().join("config.toml"), config).unwrap();
        agent_command(&["check", "--online"], &[(PASSWORD_ENV, password)]).current_dir(p.path()).stdout(Stdio::piped()).output().unwrap()
    };
    let config = config_text(&sim, &p.path().join("scripts"), "");
    let o = online("demo", &config);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for step in ["discovery", "challenge", "token", "user", "applications"] {
        assert!(t.lines().any(|l| l.starts_with("ok   ") && l.contains(&format!(" {step} ")) && l.contains(" ms  ")), "{step}: {t}");
    }
    assert!(t.contains("a token for demo@contoso.com") && t.contains("GET answered 405"), "{t}");
    assert_eq!(sim.counters()["applications_created"], 0, "no application is created");

    // A wrong password: the token step fails with the pool's reason; status 3 as `run` would.
    let o = online("wrong", &config);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.lines().any(|l| l.starts_with("FAIL token") && l.contains("invalid_grant")), "{t}");
    assert!(!t.contains("ok   user"), "it stops at the failing step: {t}");

    // Nothing listening: discovery fails, status 4.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = online("demo", &config.replace(&sim.discovery_url(), &format!("http://127.0.0.1:{closed}/")));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(t.lines().any(|l| l.starts_with("FAIL discovery") && l.contains("no answer")), "{t}");
}

#[test]
fn completions_and_the_manual_page_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = agent(&["completions", shell], dir.path());
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && t.contains("simulate") && t.contains("replay") && t.contains("online"), "{shell}: {}", text(&o));
    }
    let o = agent(&["man"], dir.path());
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && t.contains(".TH ucwa-agent 1") && t.contains("simulate"), "{}", text(&o));
    assert_eq!(agent(&["completions", "tcsh"], dir.path()).status.code(), Some(2), "an unknown shell is a usage error");
    let o = agent(&["man", "--dir", dir.path().to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    for page in ["ucwa-agent.1", "ucwa-agent-run.1", "ucwa-agent-check.1", "ucwa-agent-simulate.1"] {
        assert!(std::fs::read_to_string(dir.path().join(page)).is_ok_and(|t| t.contains(".TH")), "{page}");
    }
    assert!(std::fs::read_to_string(dir.path().join("ucwa-agent-check.1")).unwrap().contains("online"), "a command's page has its options");
    // `man | head`: the reader leaving early is no error.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ucwa-agent")).arg("man").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_shipped_configuration_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config.toml", "deploy/config.toml", "deploy/container.toml"] {
        let config = ucwa_agent::config::Config::load(&root.join(file)).unwrap_or_else(|e| panic!("{e}"));
        if file.starts_with("deploy/") {
            assert!(config.state_dir().is_absolute(), "{file}: a state dir under /etc would be read-only to the agent");
        }
    }
    // The Kubernetes manifest's config.toml (the ConfigMap's block, indented 4 spaces).
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/ucwa-agent.yaml")).unwrap();
    let block: String = manifest
        .lines()
        .skip_while(|l| l.trim() != "config.toml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    let config =
        ucwa_agent::config::Config::parse(&block, Path::new("/etc/ucwa-agent/conf/config.toml")).unwrap_or_else(|e| panic!("the manifest's config.toml: {e}"));
    let names: Vec<String> = config.accounts().unwrap().into_iter().filter_map(|a| a.name).collect();
    assert_eq!(names, ["reception", "helpdesk"]);
    assert!(config.state_dir().is_absolute() && config.scripts_dir().is_absolute());
    // The container's memory limit allows the worst case the agent's bounds allow: every
    // account in one pod (one shard may get them all), each with every script of the ConfigMap.
    let scripts =
        manifest.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_alphanumeric()) && l.trim_end().ends_with(".lua: |")).count() as u64;
    assert!(scripts >= 1);
    let limit: u64 =
        manifest.lines().find_map(|l| l.trim().strip_prefix("memory: ")?.strip_suffix("Mi")?.parse().ok().filter(|m| *m >= 256)).expect("limits.memory in Mi");
    let worst = ucwa_agent::agent::memory::worst_case_mib(&config, names.len() as u64, scripts);
    assert!(worst <= limit, "the worst case is {worst} MiB, the pod's limit {limit} MiB");
}

#[test]
fn check_and_test_load_modules_as_run_does() {
    let p = project(&[
        ("rule.lua", "local hours = require('hours')\nagent.on('audioVideoSession', 'added', function(e) agent.log.info(hours.label(9)) end)\n"),
        ("rule_test.lua", "local hours = require('hours')\ntest.load('rule.lua')\ntest.case('label', function()\n  test.eq(hours.label(9), 'office')\n  test.dispatch(test.event('audioVideoSession', 'added'))\n  test.eq(test.logs()[1].message, 'office')\nend)\n"),
    ]);
    std::fs::create_dir(p.path().join("scripts/lib")).unwrap();
    std::fs::write(p.path().join("scripts/lib/hours.lua"), "return { label = function(h) return (h >= 8 and h < 18) and 'office' or 'closed' end }\n").unwrap();
    let o = agent(&["test"], p.path());
    assert!(o.status.success() && text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    let o = agent(&["check"], p.path());
    assert!(o.status.success() && text(&o).contains("ok: rule (1 subscription)") && !text(&o).contains("hours"), "modules are not scripts: {}", text(&o));
    // A module that leads out of lib/ (a symlink) is refused.
    std::os::unix::fs::symlink("/etc/hostname", p.path().join("scripts/lib/outside.lua")).unwrap();
    std::fs::write(p.path().join("scripts/peek.lua"), "require('outside')\n").unwrap();
    let o = agent(&["check"], p.path());
    assert!(text(&o).contains("require(\"outside\"): cannot read lib/outside.lua: it leads out of lib/"), "{}", text(&o));
    // A hard link in lib/ to a file outside it (a token file) is refused, its text never quoted.
    std::fs::write(p.path().join("token.txt"), "eyJhbGciOiJIUzI1NiJ9 secret").unwrap();
    std::fs::hard_link(p.path().join("token.txt"), p.path().join("scripts/lib/linked.lua")).unwrap();
    std::fs::write(p.path().join("scripts/peek.lua"), "require('linked')\n").unwrap();
    let o = agent(&["check"], p.path());
    assert!(text(&o).contains("require(\"linked\"): cannot read lib/linked.lua: it has other names (a hard link)"), "{}", text(&o));
    assert!(!text(&o).contains("eyJhbGciOiJIUzI1NiJ9"), "{}", text(&o));
    std::fs::remove_file(p.path().join("scripts/lib/linked.lua")).unwrap();
    std::fs::remove_file(p.path().join("scripts/peek.lua")).unwrap();
    std::fs::write(p.path().join("scripts/lib/hours.lua"), "return {\n  label = function(h) return h +\n}\n").unwrap();
    let o = agent(&["check"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("lib/hours.lua:3:"), "the module's own line: {}", text(&o));
}
#[test]
fn check_finds_agent_names_that_do_not_exist_and_strict_fails_on_warnings() {
    let p = project(&[
        ("front_desk.lua", "agent.on('audioVideoInvitation', 'started', function(e)\n  -- agent.calls.nope() in a comment is no call\n  agent.calls.reject(e, 'agent.nope in a string')\n  agent.state.anything = agent.config.whatever\nend)\n"),
        ("typo.lua", "local n = 1\nagent.onn('conversation', function(e) end)\n"),
    ]);
    let o = agent(&["check"], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("scripts/front_desk.lua:3: error: `agent.calls.reject` does not exist in the agent API (did you mean `decline`?); calling it fails when this line runs"),
        "inside a handler: {t}"
    );
    assert!(
        t.contains("scripts/typo.lua:2: error: attempt to call a nil value (field 'onn'): `agent.onn` does not exist in the agent API (did you mean `on`?)"),
        "at the top level: {t}"
    );
    assert!(!t.contains("nope") && !t.contains("stack traceback"), "{t}");
    assert!(t.contains("1 script(s) loaded, 2 error(s), 0 warning(s)"), "{t}");

    // A warning passes, unless --strict.
    let p = project(&[("typo.lua", "agent.on('conversation', 'addedd', function(e) agent.calls.decline(e) end)\n")]);
    let o = agent(&["check"], p.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 script(s) loaded, 0 error(s), 1 warning(s)\n"), "{}", text(&o));
    let o = agent(&["check", "--strict"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("1 script(s) loaded, 0 error(s), 1 warning(s) (--strict: warnings fail)"), "{}", text(&o));
    // A script that took `coroutine` out of its globals is still walked whole (agent.ucwa is
    // installed for the walk after the top level, with the globals as the state was built).
    let p = project(&[("net.lua", "coroutine = nil\nagent.on('conversation', 'added', function(e) agent.ucwa.gett('/x') end)\n")]);
    let o = agent(&["check"], p.path());
    assert!(text(&o).contains("scripts/net.lua:2: error: `agent.ucwa.gett` does not exist in the agent API"), "{}", text(&o));
    // Every shipped script and example is clean, also in strict mode.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["scripts", "examples"] {
        std::fs::write(
            p.path().join("config.toml"),
            format!("[scripts]\ndir = \"{}\"\nhttp_allow = [\"hooks.example.com\", \"chat.example.com\"]\n", root.join(dir).display()),
        )
        .unwrap();
        let o = agent(&["check", "--strict"], p.path());
        assert!(o.status.success() && text(&o).contains(" 0 error(s), 0 warning(s)\n"), "{dir}: {}", text(&o));
    }
}

#[test]
fn check_refuses_the_state_dir_metrics_address_and_file_names_run_refuses() {
    let p = project(&[("good.lua", "agent.on('conversation', function(e) end)\n")]);
    let config = |extra: &str| std::fs::write(p.path().join("config.toml"), format!("[scripts]\ndir = \"scripts\"\n[state]\ndir = \"st\"\n{extra}")).unwrap();
    config("");
    // A state dir that is not there yet passes, and is not left behind.
    let o = agent(&["check"], p.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!p.path().join("st").exists(), "check leaves nothing behind");
    let st = p.path().join("st");
    let refused = |what: &str, expected: &str| {
        let o = agent(&["check"], p.path());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {t}");
        assert!(t.contains("config.toml: `state.dir`: ") && t.contains(expected) && t.contains("`run` would not start"), "{what}: {t}");
        let r = agent(&["run"], p.path());
        assert_eq!(r.status.code(), Some(2), "{what}: run refuses it too: {}", text(&r));
    };
    std::fs::create_dir_all(st.join("agent.db")).unwrap();
    refused("agent.db a directory", "state database ./st/agent.db: unable to open database file");
    std::fs::remove_dir_all(&st).unwrap();
    std::fs::create_dir(&st).unwrap();
    assert!(Command::new("mkfifo").arg(st.join("agent.db")).status().unwrap().success());
    refused("agent.db a FIFO", "state database ./st/agent.db");
    std::fs::remove_dir_all(&st).unwrap();
    std::fs::write(&st, "").unwrap();
    refused("state.dir a file", "cannot lock ./st/agent.lock");
    std::fs::remove_file(&st).unwrap();
    // Unwritable (not for root, whom permissions do not stop).
    std::fs::create_dir(&st).unwrap();
    std::fs::set_permissions(&st, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    if std::fs::write(st.join("probe"), "").is_err() {
        refused("state.dir read-only", "cannot lock ./st/agent.lock");
    }
    std::fs::set_permissions(&st, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(st.join("probe"));

    // A metrics address in use is named with what set it: the flag, or the file's key.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = agent(&["check", "--metrics-listen", &addr], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("--metrics-listen: cannot listen on {addr}: ")), "{}", text(&o));
    config(&format!("[metrics]\nlisten = \"{addr}\"\n"));
    let o = agent(&["check"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("config.toml: `metrics.listen`: cannot listen on {addr}: ")), "{}", text(&o));
    drop(taken);
    let o = agent(&["check"], p.path());
    assert!(o.status.success(), "a free address passes (and is released): {}", text(&o));
    let again = std::net::TcpListener::bind(&addr);
    assert!(again.is_ok(), "check released {addr}");
    drop(again);

    // A script whose file name is not UTF-8 is not silently skipped.
    config("");
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.lua");
    std::fs::write(p.path().join("scripts").join(name), "agent.on('conversation', function(e) end)\n").unwrap();
    let o = agent(&["check"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(".lua: error: the file name is not valid UTF-8, so `run` skips this script; rename it"), "{}", text(&o));
    std::fs::remove_file(p.path().join("scripts").join(name)).unwrap();

    // Nor is a script that is a symlink to nothing (a deploy that missed a file), a directory
    // or a FIFO named `*.lua`: `run` cannot load them either.
    let scripts = p.path().join("scripts");
    std::os::unix::fs::symlink(p.path().join("releases/v2/calls.lua"), scripts.join("calls.lua")).unwrap();
    std::fs::create_dir(scripts.join("folder.lua")).unwrap();
    assert!(Command::new("mkfifo").arg(scripts.join("pipe.lua")).status().unwrap().success());
    let o = agent(&["check"], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("calls.lua: error: a symlink whose target cannot be read (No such file or directory (os error 2)), so `run` skips this script"), "{t}");
    assert!(t.contains("folder.lua: error: a directory, not a script file, so `run` skips this script"), "{t}");
    assert!(t.contains("pipe.lua: error: not a regular file (a FIFO, socket or device), so `run` skips this script"), "{t}");
}

/// One batch: an incoming call ringing, under application 777.
fn ringing(n: u32) -> String {
    let app = "/ucwa/oauth/v1/applications/777";
    serde_json::json!({
        "_links": {"next": {"href": format!("{app}/events?ack={}", n + 1)}},
        "sender": [{"rel": "communication", "href": format!("{app}/communication"), "events": [
            {"link": {"rel": "audioVideoInvitation", "href": format!("{app}/communication/audioVideoInvitations/{n}")}, "type": "started",
             "_embedded": {"audioVideoInvitation": {"direction": "Incoming", "state": "Connecting",
                "_links": {"self": {"href": format!("{app}/communication/audioVideoInvitations/{n}")}, "decline": {"href": format!("{app}/communication/audioVideoInvitations/{n}/decline")}}}}}
        ]}]
    })
    .to_string()
}

#[test]
fn replay_answers_agent_me_from_the_recordings_application_and_fails_on_handler_errors() {
    let p = project(&[("busy.lua", "agent.on('audioVideoInvitation', 'started', function(e)\n  local p = agent.me.presence()\n  agent.log.info('presence ' .. p)\n  agent.calls.decline(e)\nend)\n")]);
    let recording = p.path().join("calls.jsonl");
    std::fs::write(&recording, format!("{}\n{}\n", ringing(1), ringing(2))).unwrap();
    // No answer for the presence: each handler fails, printed once, and the run fails.
    let o = agent(&["replay", "calls.jsonl"], p.path());
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("  would send (ucwa): GET /ucwa/oauth/v1/applications/777/me/presence\n"), "the recording's application: {out}");
    let error =
        "  error: busy.lua:2: agent.me.presence: HTTP 404 NotFound/ResourceNotFound: Not in the recording's events (give an answer with --answers FILE).\n";
    assert_eq!(out.matches(error).count(), 2, "{out}");
    assert!(!err.contains("ERROR") && !err.contains("handler failed") && err.contains("2 handler error(s)"), "each error once: {err}");
    assert!(!format!("{out}{err}").contains("agent-actions"), "{out}{err}");
    // With canned answers: a path relative to the application; the call is declined.
    std::fs::write(p.path().join("answers.json"), r#"[{"method": "GET", "path": "me/presence", "body": {"availability": "Away"}}]"#).unwrap();
    let o = agent(&["replay", "calls.jsonl", "--answers", "answers.json"], p.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains("  info: presence Away\n")
            && out.contains("would send (ucwa): POST /ucwa/oauth/v1/applications/777/communication/audioVideoInvitations/2/decline"),
        "{out}"
    );
    // A file that is not answers: status 2, naming the flag and what was expected.
    std::fs::write(p.path().join("answers.json"), r#"[{"method": "GET"}]"#).unwrap();
    let o = agent(&["replay", "calls.jsonl", "--answers", "answers.json"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--answers answers.json: missing field `path`") && text(&o).contains("expected a JSON array of"), "{}", text(&o));
}

#[test]
fn test_cases_start_with_no_captures_and_a_script_is_not_taken_for_its_test() {
    let p = project(&[
        ("desk.lua", "agent.on('audioVideoInvitation', 'started', function(e)\n  agent.log.info('ringing')\n  agent.log.info('presence ' .. agent.me.presence())\n  agent.log.info('note ' .. agent.me.note())\nend)\n"),
        (
            "desk_test.lua",
            "test.load('desk.lua')\ntest.answer('GET', 'me/presence', 200, {availability = 'Busy'})\n\
             test.case('first', function()\n  test.fails(function() test.dispatch(test.event('audioVideoInvitation', 'started')) end)\nend)\n\
             test.case('second sees only its own', function()\n  test.eq(#test.logs(), 0)\n  test.eq(#test.requests(), 0)\nend)\n\
             test.case('the note is not answered', function()\n  test.dispatch(test.event('audioVideoInvitation', 'started'))\nend)\n",
        ),
    ]);
    let o = agent(&["test"], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("ok 1 - first\n") && t.contains("ok 2 - second sees only its own\n") && t.contains("not ok 3 - the note is not answered"), "{t}");
    assert!(
        t.contains("desk.lua:4: agent.me.note: HTTP 404 NotFound/ResourceNotFound: No test.answer for this href, and no event dispatched so far embedded it."),
        "the script's line, and test's own words: {t}"
    );
    assert!(!t.contains("agent-actions") && !t.contains("replayed") && !t.contains("__mlua"), "no frame of the agent's own: {t}");
    assert!(t.contains("#   \tdesk.lua:4: in function <desk.lua:1>\n#   \tdesk_test.lua:11: in function <desk_test.lua:10>"), "{t}");
    // The script, where its test was meant.
    let o = agent(&["test", "scripts/desk.lua"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("this is a script, not a test; its test is scripts/desk_test.lua: ucwa-agent test scripts/desk_test.lua"), "{}", text(&o));
    std::fs::remove_file(p.path().join("scripts/desk_test.lua")).unwrap();
    let o = agent(&["test", "scripts/desk.lua"], p.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(
            "no test.case in this file: is it a script? A script's test is a file beside it, scripts/desk_test.lua, that calls test.load(\"desk.lua\")"
        ),
        "{}",
        text(&o)
    );
}

#[test]
fn a_closed_standard_output_ends_the_tools_quietly_with_their_status() {
    let p = project(&[
        ("rule.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('hi') end)\n"),
        ("rule_test.lua", "test.load('rule.lua')\nfor i = 1, 50 do test.case('case ' .. i, function() test.ok(i ~= 7) end) end\n"),
    ]);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let cases: [(&[&str], i32); 6] = [
        (&["test"], 1),
        (&["check"], 0),
        (&["replay", samples.to_str().unwrap()], 0),
        (&["man"], 0),
        (&["completions", "bash"], 0),
        (&["test", "scripts/rule.lua"], 1),
    ];
    for (args, status) in cases {
        // The reading end is closed before the command writes anything: every write fails.
        let mut child = Command::new(env!("CARGO_BIN_EXE_ucwa-agent"))
            .args(args)
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(status), "{args:?}: {err}");
        assert!(!err.contains("panic") && !err.contains("internal error") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn bash_completes_after_the_subcommand() {
    if Command::new("bash").arg("--version").output().is_err() {
        return; // no bash here: nothing to check
    }
    let bin = env!("CARGO_BIN_EXE_ucwa-agent");
    let complete = |words: &str, cword: usize| {
        let script = format!(
            "source <('{bin}' completions bash)\nf=$(complete -p ucwa-agent | sed 's/.*-F \\([^ ]*\\).*/\\1/')\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\n\
             $f ucwa-agent \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\necho \"${{COMPREPLY[@]}}\""
        );
        let o = Command::new("bash").arg("-c").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(complete("ucwa-agent simulate --qu", 2), "--quirk");
    assert!(complete("ucwa-agent simulate --quirk ''", 3).split(' ').any(|q| q == "dotnet_dates"));
    assert_eq!(complete("ucwa-agent check --st", 2), "--strict");
    assert_eq!(complete("ucwa-agent ch", 1), "check");
}

#[test]
fn the_manual_has_exit_statuses_signals_environment_files_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let o = agent(&["man"], dir.path());
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    for section in [".SH \"EXIT STATUS\"", ".SH \"SIGNALS\"", ".SH \"ENVIRONMENT\"", ".SH \"FILES\"", ".SH \"CONFIGURATION\""] {
        assert!(page.contains(section), "{section}");
    }
    for word in [
        "SIGHUP",
        "RUST_LOG",
        "NO_COLOR",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "WATCHDOG_USEC",
        "agent.lock",
        "credentials-refused",
        "\\fBstate.dir (default: \"state\")\\fR",
    ] {
        assert!(page.contains(word), "{word}");
    }
    assert!(!page.contains('`'), "no Markdown backticks");
    let o = agent(&["man", "--dir", dir.path().to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(dir.path().join("ucwa-agent.1")).unwrap().contains(".SH \"EXIT STATUS\""));
    for page in std::fs::read_dir(dir.path()).unwrap() {
        let page = page.unwrap().path();
        assert!(!std::fs::read_to_string(&page).unwrap().contains('`'), "{}", page.display());
    }
}

#[test]
fn flags_without_effect_are_refused_and_a_busy_simulator_address_is_status_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["completions", "bash", "--shard", "0/2"][..],
        &["man", "--metrics-listen", "127.0.0.1:1"],
        &["--shard", "0/2", "test"],
        &["replay", "x.jsonl", "--metrics-listen", "127.0.0.1:1"],
        &["simulate", "--shard", "0/2", "--listen", "127.0.0.1:0"],
        &["--metrics-listen", "127.0.0.1:1", "simulate", "--listen", "127.0.0.1:0"],
    ] {
        let o = agent(args, dir.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("to run, record and check, not to"), "{args:?}: {}", text(&o));
    }
    // `trace --last 0` asks for nothing: a usage error, not every trace.
    let o = agent(&["trace", "--last", "0"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--last"), "{}", text(&o));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_ucwa-agent"))
        .args(["simulate", "--listen", &addr])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded();
    let started = std::time::Instant::now();
    while sim.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "simulate did not stop with its address in use");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sim.try_wait().unwrap().and_then(|s| s.code()), Some(2));
}

#[test]
fn check_names_the_accounts_of_a_shard_and_the_memory_they_may_need() {
    let p = project(&[("rule.lua", "agent.on('audioVideoSession', function() end)\n")]);
    std::fs::write(p.path().join("config.toml"), "[scripts]\ndir = \"scripts\"\n[[account]]\nname = \"reception\"\n[[account]]\nname = \"helpdesk\"\n")
        .unwrap();
    let shards: Vec<String> = (0..3)
        .map(|k| {
            let o = agent(&["check", "--shard", &format!("{k}/3")], p.path());
            assert!(o.status.success(), "{}", text(&o));
            text(&o).lines().find(|l| l.starts_with(&format!("shard {k}/3: "))).unwrap_or_else(|| panic!("{}", text(&o))).to_string()
        })
        .collect();
    // Every account in exactly one shard, and a shard with none says it would idle.
    let named: Vec<&str> = shards.iter().flat_map(|l| l.split(": ").nth(1).unwrap().split(", ")).filter(|n| !n.starts_with("no account")).collect();
    let mut sorted = named.clone();
    sorted.sort();
    assert_eq!(sorted, ["helpdesk", "reception"], "{shards:?}");
    assert!(shards.iter().any(|l| l.ends_with("no account (an agent of this shard would idle)")), "{shards:?}");
    let o = agent(&["check"], p.path());
    assert!(text(&o).contains("memory: at most about ") && text(&o).contains("for 2 account(s) of 1 script(s) each"), "{}", text(&o));
    // A file without [[account]]: `run --shard` refuses to start, and so does check.
    std::fs::write(p.path().join("config.toml"), "[scripts]\ndir = \"scripts\"\n").unwrap();
    let o = agent(&["check", "--shard", "0/2"], p.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--shard splits [[account]] entries; this file has none"), "{}", text(&o));
}

#[test]
fn a_handler_stopped_by_the_instruction_limit_says_at_which_line() {
    let p = project(&[
        ("loop.lua", "agent.on('audioVideoSession', 'added', function(e)\n  local x = 0\n  while true do x = x + 1 end\nend)\n"),
        ("loop_test.lua", "test.load('loop.lua')\ntest.case('spins', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\nend)\n"),
    ]);
    let o = agent(&["test"], p.path());
    assert!(text(&o).contains("instruction limit exceeded (scripts.instruction_limit), stopped at loop.lua:3"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_gives_what_one_script_did_with_some_batches_as_replay_would() {
    use ucwa_agent::script::ScriptOutput;
    use ucwa_agent::tools::replay::{dry_run, Answer};
    let p = project(&[(
        "desk.lua",
        "agent.on('audioVideoInvitation', 'started', function(e)\n  agent.state.rang = (agent.state.rang or 0) + 1\n  \
         agent.log.info('ringing', { presence = agent.me.presence() })\nend)\n",
    )]);
    let config = ucwa_agent::config::Config::load(&p.path().join("config.toml")).unwrap();
    let batch = r#"{"_links":{"next":{"href":"/events?ack=2"}},"sender":[{"rel":"communication","href":"/ucwa/oauth/v1/applications/7/communication","events":[{"link":{"rel":"audioVideoInvitation","href":"/ucwa/oauth/v1/applications/7/communication/audioVideoInvitations/1"},"type":"started"}]}]}"#;
    let answers = [Answer { method: "GET".into(), path: "me/presence".into(), status: 200, body: serde_json::json!({"availability": "Away"}) }];
    let run = dry_run(&config, &p.path().join("scripts/desk.lua"), &[batch.as_bytes().to_vec()], &answers).await;
    assert!(run.not_loaded.is_none() && run.unfinished.is_empty(), "{run:?}");
    let log = run.outputs.iter().find_map(|o| match o {
        ScriptOutput::Log { message, fields, .. } if message == "ringing" => fields.clone(),
        _ => None,
    });
    assert_eq!(log, Some(serde_json::json!({"presence": "Away"})), "{:?}", run.outputs);
    assert!(
        run.outputs.iter().any(|o| matches!(o, ScriptOutput::Request { method, url, .. } if method == "GET" && url.ends_with("/applications/7/me/presence"))),
        "the recording's application: {:?}",
        run.outputs
    );
    assert!(run.outputs.iter().any(|o| matches!(o, ScriptOutput::State { json, .. } if json == r#"{"rang":1}"#)), "{:?}", run.outputs);
    // A script that does not load says why, and nothing runs.
    std::fs::write(p.path().join("scripts/broken.lua"), "agent.on(\n").unwrap();
    let run = dry_run(&config, &p.path().join("scripts/broken.lua"), &[batch.as_bytes().to_vec()], &[]).await;
    assert!(
        run.not_loaded.as_ref().is_some_and(|e| e.message.contains("syntax error")) && run.outputs.iter().all(|o| !matches!(o, ScriptOutput::Event { .. })),
        "{run:?}"
    );
}

#[test]
fn test_eq_compares_strings_that_are_not_utf8_as_bytes() {
    // Latin-1 text a script handles (a legacy server's answer) is no JSON value: test.eq gave
    // "deserialize error: invalid type: byte array" for it.
    let p = project(&[
        ("latin.lua", "agent.on('audioVideoSession', function(e) end)\n"),
        (
            "latin_test.lua",
            "test.load('latin.lua')\ntest.case('same', function() test.eq('caf\\xe9', 'caf\\xe9') end)\ntest.case('other', function() test.eq('caf\\xe9', 'caf\\xe8') end)\n",
        ),
    ]);
    let o = agent(&["test", "scripts/latin_test.lua"], p.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("\nok 1 - same") && t.contains("latin_test.lua:3: expected \"caf\\xe8\", got \"caf\\xe9\""), "{t}");
}
