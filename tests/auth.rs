//! Authentication kinds, token renewal, and secrets that never reach a log.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use ucwa_agent::sim::{Fault, SimConfig, Simulator};

const SESSIONS: &str = "agent.on('audioVideoSession', 'added', function(e) agent.log.info('added') end)\n";

/// A token the simulator issued, as an administrator's tooling would fetch it.
async fn fresh_token(sim: &Simulator) -> String {
    let t: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/WebTicket/oauthtoken", sim.origin()))
        .body("grant_type=password&username=demo@contoso.com&password=demo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t["access_token"].as_str().unwrap().to_string()
}

fn bearer_config(sim: &Simulator, dir: &Path, source: &str) -> String {
    config_with_auth(sim, dir, &format!("kind = \"bearer\"\nusername = \"demo@contoso.com\"\n{source}"), "")
}

/// Runs an agent with a bearer source backed by `token_file`: a call, the tokens expire, the
/// file gets a new token, another call.
async fn bearer_round_trip(source: impl Fn(&Path) -> String) {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sessions.lua", SESSIONS);
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, format!("{}\n", fresh_token(&sim).await)).unwrap();
    let mut agent = start_agent(&sim, &bearer_config(&sim, dir.path(), &source(&token_file))).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("sessions", 1).await, ["added"]);
    sim.end_call(c);
    sim.inject(Fault::TokenExpiry, 1);
    std::fs::write(&token_file, fresh_token(&sim).await).unwrap();
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("sessions", 1).await, ["added"]);
    assert_eq!(sim.counters()["applications_created"], 1, "the same application carried on");
    agent.stop().await;
}

#[tokio::test]
async fn bearer_token_from_a_file_is_re_read() {
    bearer_round_trip(|f| format!("token_file = \"{}\"", f.display())).await;
}

#[tokio::test]
async fn bearer_token_command_runs_again_when_rejected() {
    // The command notes each run: once at start, once after the pool rejected the token.
    let runs = tempfile::NamedTempFile::new().unwrap();
    let log = runs.path().display().to_string();
    bearer_round_trip(|f| format!("token_command = [\"sh\", \"-c\", \"echo run >> '{log}'; cat '{}'\"]", f.display())).await;
    // A command runs only at start and when the pool rejects the token (there is no file to
    // watch): a second run is the rejection path. (More than two: a request was rejected in
    // the moment between the tokens' expiry and the new token being written.)
    let runs = std::fs::read_to_string(runs.path()).unwrap().lines().count();
    assert!(runs >= 2, "the command ran at start and again after the rejection: {runs}");
}

#[tokio::test]
async fn bearer_token_from_the_environment() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sessions.lua", SESSIONS);
    std::env::set_var("UCWA_AGENT_TEST_BEARER", fresh_token(&sim).await);
    let mut agent = start_agent(&sim, &bearer_config(&sim, dir.path(), "token_env = \"UCWA_AGENT_TEST_BEARER\"")).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("sessions", 1).await, ["added"]);
    assert_eq!(sim.counters()["unauthorized"], 0, "a bearer token needs no challenge");
    agent.stop().await;
}

// Renewal before `expires_in` is tested on the paused clock (`paused_clock.rs`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    const PASSWORD: &str = "s3cret-Pa55word";
    let sim = start_sim(SimConfig { users: vec![("svc@contoso.com".into(), PASSWORD.into())], token_lifetime: Duration::from_secs(2), ..sim_config() }).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "sessions.lua", SESSIONS);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndiscover = \"{}\"\n[auth]\nkind = \"password\"\nusername = \"svc@contoso.com\"\npassword_env = \"SVC_PASSWORD\"\n[scripts]\ndir = \".\"\n",
            sim.discovery_url()
        ),
    )
    .unwrap();
    for format in ["human", "json"] {
        let log = dir.path().join(format!("{format}.log"));
        let issued = sim.counters()["tokens_issued"].as_u64().unwrap();
        let mut child =
            agent_command(&["--log-format", format, "run", "--config", config.to_str().unwrap()], &[("SVC_PASSWORD", PASSWORD), ("RUST_LOG", "trace")])
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn_guarded();
        wait_available(&sim).await;
        let c = sim.start_call(answered_call()).unwrap();
        // The script's own line (other lines mention "added" before the session is answered).
        file_contains(&log, if format == "json" { "\"message\":\"added\"" } else { "script: added" }).await;
        // The tokens stop being valid; the call's end releases the held poll, and the next one
        // (with the old token) is refused: a new token is obtained.
        sim.inject(Fault::TokenExpiry, 1);
        sim.end_call(c);
        eventually("a renewal", || sim.counters()["tokens_issued"].as_u64().unwrap() >= issued + 2).await;
        signal(&child, "-TERM");
        let (code, _) = exit_within(&mut child, PATIENCE).await;
        assert_eq!(code, Some(0), "{format}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("got a token") && text.contains("added"), "{format}: the log has content: {}", &text[..text.len().min(2000)]);
        assert!(!text.contains(PASSWORD), "{format}: the password is in the log");
        assert!(!text.contains("cwt="), "{format}: a token is in the log");
        if format == "json" {
            // A script's line carries the script and the event it was handling, as fields.
            let line = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["target"] == "script" && l["message"] == "added")
                .unwrap_or_else(|| panic!("the script's log line: {}", text.lines().filter(|l| l.contains("sessions")).collect::<Vec<_>>().join("\n")));
            assert_eq!((&line["script"], &line["rel"], &line["type"]), (&"sessions".into(), &"audioVideoSession".into(), &"added".into()), "{line}");
            assert!(line["seq"].as_u64().is_some_and(|s| s > 0), "{line}");
            assert_eq!(line["version"], 1, "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deletes_the_application_and_a_second_signal_exits_at_once() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // A handler that waits on a server that never answers keeps shutdown busy.
    let port = silent_server().await;
    write(
        dir.path(),
        "busy.lua",
        &format!("agent.on('audioVideoSession', 'added', function(e) agent.log.info('waiting') agent.http.request{{url = 'http://127.0.0.1:{port}/'}} end)\n"),
    );
    let config = dir.path().join("config.toml");
    let text = config_text(&sim, dir.path(), &format!("http_allow = [\"127.0.0.1:{port}\"]\nhandler_timeout_ms = 60000"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("agent.log");
    let spawn =
        || agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();

    // Idle: one SIGTERM stops it cleanly and the application is deleted.
    let mut child = spawn();
    wait_available(&sim).await;
    signal(&child, "-TERM");
    assert_eq!(exit_within(&mut child, PATIENCE).await.0, Some(0));
    assert_eq!(sim.counters()["applications_deleted"], 1);

    // Busy: the first SIGTERM waits for the handler; the second exits at once (status 130).
    let mut child = spawn();
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    file_contains(&log, "waiting").await;
    signal(&child, "-TERM");
    file_contains(&log, "shutting down").await;
    assert!(child.try_wait().unwrap().is_none(), "the first signal was taken and the agent is finishing the running handler");
    signal(&child, "-TERM");
    let (code, took) = exit_within(&mut child, PATIENCE).await;
    assert_eq!(code, Some(130));
    // (Without it the agent would give the handler its 5 s grace: anything under that is "at once"
    // on a loaded machine.)
    assert!(took < Duration::from_secs(5), "the second signal exits at once: {took:?}");
}

fn tls_sim_config() -> SimConfig {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    SimConfig { tls: Some(ucwa_agent::sim::TlsFiles { cert: fixtures.join("sim.pem"), key: fixtures.join("sim.key") }), ..sim_config() }
}

#[tokio::test]
async fn tls_is_verified_and_server_ca_file_adds_a_corporate_ca() {
    use ucwa_agent::sim::{DEMO_PASSWORD, DEMO_USER};
    use ucwa_agent::ucwa::signin::sign_in;
    use ucwa_agent::ucwa::{session::http_client, Auth, Secret};
    let sim = start_sim(tls_sim_config()).await;
    assert!(sim.discovery_url().starts_with("https://127.0.0.1:"), "{}", sim.discovery_url());
    let discover = url::Url::parse(&sim.discovery_url()).unwrap();
    let auth = Auth::Password { username: DEMO_USER.into(), password: Secret::new(DEMO_PASSWORD) };

    // Without the CA, a certificate the public roots do not vouch for is refused.
    let Err(refused) = sign_in(&http_client(None).unwrap(), &discover, &auth, None).await else { panic!("an untrusted certificate is refused") };
    assert!(format!("{refused:?}").contains("UnknownIssuer"), "{refused:?}");

    // `server.ca_file` names the CA: the agent signs in over TLS and takes calls.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "calls.lua", "agent.on('audioVideoSession', 'added', function(e) agent.log.info('call over tls') end)\n");
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let text = config_text(&sim, dir.path(), "").replace("[server]\n", &format!("[server]\nca_file = \"{}\"\n", ca.display()));
    let mut agent = start_agent(&sim, &text).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut agent.out, "calls", 1).await, ["call over tls"]);
    agent.stop().await;
}

/// Logs the agent's own events with their reason, for the binary's log.
const AGENT_EVENTS: &str = r#"agent.on("agent", function(e) agent.log.warn("agent event " .. e.type .. ": " .. tostring(e.resource.reason)) end)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_tried_three_times_then_the_agent_exits_3() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&sim, dir.path(), "");
    let mut agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[(PASSWORD_ENV, "wrong")]).stderr(std::process::Stdio::piped()).spawn_guarded();
    let (code, _) = exit_within(&mut agent, PATIENCE).await;
    let mut log = String::new();
    std::io::Read::read_to_string(agent.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("refused the credentials 3 times in a row") && log.contains("fix [auth]") && log.contains("invalid_grant"), "{log}");
    assert!(!log.contains("wrong"), "the password is never logged: {log}");
    assert_eq!(sim.counters()["token_rejections"], 3, "three tries, no more");

    // Restarted by a supervisor with the same password: it is not tried again.
    let again =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[(PASSWORD_ENV, "wrong")]).stderr(std::process::Stdio::piped()).output().unwrap();
    let log = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(3), "{log}");
    assert!(log.contains("not trying it again") && log.contains("credentials-refused"), "{log}");
    assert_eq!(sim.counters()["token_rejections"], 3, "no new attempt against the account");
    let check = agent_command(&["check", "--online", "--config", config.to_str().unwrap()], &[(PASSWORD_ENV, "wrong")])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(3), "{shown}");
    assert!(shown.contains("FAIL token") && shown.contains("refused before"), "{shown}");
    assert_eq!(sim.counters()["token_rejections"], 3, "check --online does not try it either");
    // The password fixed: it signs in, and the record is gone.
    let mut fixed = spawn_agent(&config, std::process::Stdio::null());
    wait_available(&sim).await;
    assert!(!dir.path().join(".state/credentials-refused").exists());
    signal(&fixed, "-TERM");
    assert_eq!(exit_within(&mut fixed, PATIENCE).await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_while_running_signs_the_scripts_out_then_the_agent_exits_3() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "watch.lua", AGENT_EVENTS);
    let config = config_file(&sim, dir.path(), "");
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, std::fs::File::create(&log).unwrap());
    wait_available(&sim).await;
    file_contains(&log, "agent event signedIn").await;
    // An admin resets the password; the token runs out: the agent cannot renew it.
    assert!(sim.set_password("demo@contoso.com", "reset-by-admin"));
    sim.inject(Fault::TokenExpiry, 1);
    sim.start_call(answered_call()).unwrap(); // releases the parked poll; the next one needs a token
    let (code, _) = exit_within(&mut agent, PATIENCE).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("agent event signedOut: credentials refused"), "the scripts are told why: {text}");
    assert_eq!(sim.counters()["token_rejections"], 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_secrets_come_from_the_environment_or_a_file_and_never_reach_a_log() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.secret"), "https://hooks.example.com/T0/B0/s3cr3tPath\n").unwrap();
    write(
        dir.path(),
        "leaky.lua",
        r#"agent.on("audioVideoSession", "added", function(e)
  agent.log.info("using " .. agent.config.token, { url = agent.config.hook, len = #agent.config.token })
  error("failed with " .. agent.config.hook)
end)"#,
    );
    let extra = "[scripts.config.leaky]\ntoken = { env = \"UCWA_AGENT_TEST_SCRIPT_TOKEN\" }\nhook = { file = \"hook.secret\" }\n";
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, config_text(&sim, dir.path(), extra)).unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = agent_command(
        &["--log-format", "json", "run", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "debug"), ("UCWA_AGENT_TEST_SCRIPT_TOKEN", "tok-0123456789")],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn_guarded();
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    file_contains(&log, "handler failed").await;
    signal(&agent, "-TERM");
    exit_within(&mut agent, PATIENCE).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("tok-0123456789") && !text.contains("s3cr3tPath"), "a secret reached the log: {text}");
    let line = text.lines().find(|l| l.contains("\"using ")).expect("the script's line");
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["message"], "using [redacted]");
    assert_eq!(line["fields"], serde_json::json!({"url": "[redacted]", "len": 14}), "the script had the values");
    assert!(text.contains("failed with [redacted]"), "{text}");

    // `replay` and `test` never read secrets: the script sees placeholders, whatever is set.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/samples.jsonl");
    let out =
        agent_command(&["replay", samples.to_str().unwrap(), "--config", config.to_str().unwrap()], &[("UCWA_AGENT_TEST_SCRIPT_TOKEN", "tok-0123456789")])
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("using <secret:UCWA_AGENT_TEST_SCRIPT_TOKEN>") && !shown.contains("tok-0123456789") && !shown.contains("s3cr3tPath"), "{shown}");

    // `check` names a secret that cannot be read, at the script, as `run` would refuse to load it.
    let out = agent_command(&["check", "--config", config.to_str().unwrap()], &[]).stdout(std::process::Stdio::piped()).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("leaky.lua: error: agent.config.token: the environment variable UCWA_AGENT_TEST_SCRIPT_TOKEN is not set"), "{report}");
}

/// Review of 2026-12-04, missing test 9 (its script side): a script's `agent.ucwa.get` made
/// after the pool expired every token answers 200, never 401: the request is retried with a
/// renewed token. (The pool's count of rejected requests covers the agent's own polls too, so
/// it shows at least one rejection, not whose.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_request_after_the_tokens_expire_is_retried_and_answers_200() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "reader.lua",
        "agent.on('agent', 'signedIn', function()\n  agent.every(50, function()\n    local ok, r = pcall(agent.ucwa.get, agent.ucwa.application())\n    \
         agent.log.info(ok and tostring(r.status) or ('error ' .. tostring(r)))\n  end)\nend)\n",
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    assert_eq!(agent.messages("reader", 2).await, ["200", "200"]);
    let (rejected, issued) = (sim.counters()["unauthorized"].as_u64().unwrap(), sim.counters()["tokens_issued"].as_u64().unwrap());
    sim.inject(Fault::TokenExpiry, 1);
    let mut out = agent.out.resubscribe();
    assert_eq!(messages_of(&mut out, "reader", 5).await, ["200"; 5], "no 401 reaches the script");
    assert!(sim.counters()["unauthorized"].as_u64().unwrap() > rejected, "the expired token was refused: {}", sim.counters());
    assert!(sim.counters()["tokens_issued"].as_u64().unwrap() > issued, "a new token: {}", sim.counters());
    agent.stop().await;
}
