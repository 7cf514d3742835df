//! A secret of `[scripts.config.<name>]` never reaches what the agent prints or keeps, wherever
//! a script puts it: a log field's key or value, the message, an error, in the human and the
//! JSON log formats, the traces in the database and `ucwa-agent trace`, and `ucwa-agent test`'s
//! output (which never reads a secret at all). Metric label values and names: tests/hardening.rs.

mod common;

use common::*;

const SECRET_ENV: &str = "UCWA_AGENT_TEST_REDACTION_SECRET";
const SECRET: &str = "tok_r3d4ct10n";

const LEAKY: &str = r#"local token = agent.config.token
agent.on("audioVideoSession", "added", function(e)
  agent.log.info("message " .. token, {[token] = 1, nested = {["k" .. token] = token}, list = {token}})
  local ok, err = pcall(error, "failed with " .. token)
  agent.log.warn("caught", {err = err})
  agent.log.info("done")
  error("handler error " .. token)
end)
"#;

/// Runs the agent binary in `format` until the script has logged, with the call's events; its log.
async fn logged(format: &str) -> (String, tempfile::TempDir) {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "leaky.lua", LEAKY);
    let config = config_file(&sim, dir.path(), &format!("[scripts.config.leaky]\ntoken = {{ env = \"{SECRET_ENV}\" }}"));
    let log = dir.path().join("agent.log");
    let mut agent = agent_command(&["--log-format", format, "run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "debug"), (SECRET_ENV, SECRET)])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn_guarded();
    wait_available(&sim).await;
    let call = sim.start_call(answered_call()).unwrap();
    file_contains(&log, "handler error").await;
    sim.end_call(call);
    signal(&agent, "-TERM");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0));
    (std::fs::read_to_string(&log).unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_redacted_as_a_field_key_and_value_in_json_logs_and_traces() {
    let (text, dir) = logged("json").await;
    assert!(!text.contains(SECRET), "{text}");
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let line = lines.iter().find(|l| l["script"] == "leaky" && l["message"] == "message [redacted]").unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line["fields"], serde_json::json!({"[redacted]": 1, "nested": {"k[redacted]": "[redacted]"}, "list": ["[redacted]"]}), "{line}");
    assert!(lines.iter().any(|l| l["message"] == "caught" && l["fields"]["err"].as_str().is_some_and(|e| e.ends_with("failed with [redacted]"))), "{text}");
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("handler error [redacted]"))), "{text}");
    // The traces kept in the database, and what `trace` prints of them.
    let config = dir.path().join("agent.toml");
    let traced = output_within(&mut agent_command(&["trace", "--config", config.to_str().unwrap(), "--json"], &[]), PATIENCE).await;
    let traced = String::from_utf8_lossy(&traced.stdout);
    assert!(traced.contains("[redacted]") && !traced.contains(SECRET), "{traced}");
    for file in ["agent.db", "agent.db-wal"] {
        let bytes = std::fs::read(dir.path().join(".state").join(file)).unwrap_or_default();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret is in {file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_redacted_as_a_field_key_and_value_in_human_logs() {
    let (text, _dir) = logged("human").await;
    assert!(!text.contains(SECRET), "{text}");
    let line = text.lines().find(|l| l.contains("message [redacted]")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("[redacted]=1") && line.contains("k[redacted]") && !line.contains("tok_"), "{line}");
    assert!(text.contains("handler error [redacted]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_output_never_holds_a_secret_only_its_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("config.toml"), format!("[scripts]\ndir = \"scripts\"\n[scripts.config.leaky]\ntoken = {{ env = \"{SECRET_ENV}\" }}\n"))
        .unwrap();
    std::fs::write(dir.path().join("scripts/leaky.lua"), LEAKY).unwrap();
    std::fs::write(
        dir.path().join("scripts/leaky_test.lua"),
        "test.load('leaky.lua')\n\
         test.case('the handler fails with the token', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\nend)\n\
         test.case('its log lines', function()\n  test.fails(function() test.dispatch(test.event('audioVideoSession', 'added')) end)\n  \
         local l = test.logs()[1]\n  test.eq(l.fields, {})\nend)\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ucwa-agent"));
    cmd.arg("test").current_dir(dir.path()).env(SECRET_ENV, SECRET).env("RUST_LOG", "debug");
    let o = output_within(&mut cmd, PATIENCE).await;
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let placeholder = format!("<secret:{SECRET_ENV}>");
    assert!(text.contains(&format!("leaky.lua:7: handler error {placeholder}")), "{text}");
    // The second case fails on purpose, to print the fields with the placeholder as a key.
    assert!(text.contains(&format!("[\"{placeholder}\"]")) || text.contains(&format!("\"{placeholder}\":1")), "{text}");
}

/// Review of 2026-12-04, missing test 6 (its edges): in `run`, an empty secret stops the
/// script's load naming the key; a value under 3 characters is left alone; a rotated secret
/// file is read again when the script reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_secrets_stop_the_load_short_ones_are_kept_and_a_rotated_file_is_read_on_reload() {
    use ucwa_agent::script::ScriptOutput;
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (empty_env, short_env) = ("UCWA_AGENT_TEST_EMPTY_SECRET", "UCWA_AGENT_TEST_SHORT_SECRET");
    std::env::set_var(empty_env, "");
    std::env::set_var(short_env, "ab");
    let (empty_file, rotating) = (dir.path().join("empty.secret"), dir.path().join("rotating.secret"));
    std::fs::write(&empty_file, "").unwrap();
    std::fs::write(&rotating, "first-secret\n").unwrap();
    let says = "agent.on('audioVideoSession', 'added', function(e) agent.log.info('token ' .. agent.config.token) end)\n";
    let which = "agent.on('audioVideoSession', 'added', function(e)\n  local t = agent.config.token\n  \
                 agent.log.info(t == 'first-secret' and 'the first' or t == 'second-secret' and 'the second' or 'another')\nend)\n";
    write(dir.path(), "short.lua", says);
    write(dir.path(), "rotated.lua", which);
    let extra = format!(
        "reload_debounce_ms = 20\n[scripts.config.empty_env]\ntoken = {{ env = \"{empty_env}\" }}\n[scripts.config.empty_file]\ntoken = {{ file = \"{}\" }}\n\
         [scripts.config.short]\ntoken = {{ env = \"{short_env}\" }}\n[scripts.config.rotated]\ntoken = {{ file = \"{}\" }}\n",
        empty_file.display(),
        rotating.display()
    );
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), &extra)).await;
    // Scripts with an empty secret, saved while running: not loaded, the key named.
    let mut out = agent.out.resubscribe();
    write(dir.path(), "empty_env.lua", says);
    let failed = expect(&mut out, "empty_env refused", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "empty_env")).await;
    assert!(
        matches!(&failed, ScriptOutput::LoadFailed { error, .. } if error.contains(&format!("agent.config.token: the environment variable {empty_env} is not set"))),
        "{failed:?}"
    );
    write(dir.path(), "empty_file.lua", says);
    let failed = expect(&mut out, "empty_file refused", |o| matches!(o, ScriptOutput::LoadFailed { script, .. } if script == "empty_file")).await;
    assert!(matches!(&failed, ScriptOutput::LoadFailed { error, .. } if error.contains("agent.config.token: ") && error.contains("is empty")), "{failed:?}");

    let (mut short, mut rotated) = (agent.out.resubscribe(), agent.out.resubscribe());
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut short, "short", 1).await, ["token ab"], "under 3 characters: not redacted");
    assert_eq!(messages_of(&mut rotated, "rotated", 1).await, ["the first"]);
    sim.end_call(call);
    eventually("the call ended", || sim.counters()["calls_ended"] == 1).await;

    // The file rotated, then the script saved: its new version reads the new secret.
    std::fs::write(&rotating, "second-secret\n").unwrap();
    write(dir.path(), "rotated.lua", &format!("{which}-- saved again\n"));
    agent.expect("rotated reloaded", |o| matches!(o, ScriptOutput::Loaded { script, version: 2 } if script == "rotated")).await;
    let mut rotated = agent.out.resubscribe();
    let call = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut rotated, "rotated", 1).await, ["the second"]);
    sim.end_call(call);
    agent.stop().await;
}
