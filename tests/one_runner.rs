//! `ucwa-agent test` runs handlers by the rules of `run`, on the same host and runner: the
//! limits per call, the watchdog for a call stuck in C, the commit of `agent.state`, the
//! pause after repeated failures, and errors worded as `run` words them.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use ucwa_agent::script::ScriptOutput;

/// A project: `config.toml` with `[scripts]` `extra`, and `files` in `scripts/`.
fn project(extra: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("config.toml"), format!("[scripts]\ndir = \"scripts\"\n{extra}\n")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("scripts").join(name), text).unwrap();
    }
    dir
}

/// `ucwa-agent test` in `dir`: its exit status and its TAP output.
async fn run_tests(dir: &Path) -> (Option<i32>, String) {
    let o = output_within(Command::new(env!("CARGO_BIN_EXE_ucwa-agent")).arg("test").current_dir(dir).env_remove("RUST_LOG"), PATIENCE).await;
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Sorts two million numbers twice in C: seconds in which neither the instruction hook nor the
/// time limit runs (as in tests/stuck.rs).
const HOG: &str = r#"local function hog()
  local t = table.pack(string.byte(string.rep("\1\2\3\4\5\6\7\8", 62500), 1, -1))
  local n = t.n
  for _ = 1, 2 do table.move(t, 1, n, n + 1); n = n * 2 end
  table.sort(t); table.sort(t)
end
agent.on("audioVideoSession", "added", hog)
"#;

const LIMITS: &str = "handler_timeout_ms = 100\ninstruction_limit = 100000000000\nmemory_limit_mb = 1024";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stuck_in_c_is_declared_stuck_at_its_limit_as_in_run() {
    let p = project(
        LIMITS,
        &[
            ("hog.lua", HOG),
            (
                "hog_test.lua",
                "test.load('hog.lua')\ntest.case('fine', function() test.ok(true) end)\n\
                 test.case('hogs', function() test.dispatch(test.event('audioVideoSession', 'added')) end)\n\
                 test.case('never runs', function() test.ok(true) end)\n",
            ),
        ],
    );
    let (code, text) = run_tests(p.path()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ok 1 - fine\n"), "{text}");
    // The watchdog's verdict, as `run` gives it (tests/stuck.rs): the call, the limit from the file.
    assert!(text.contains("not ok 2 - hogs\n#   stuck: handler for audioVideoSession/added (seq 1) ran past its 100 ms limit and did not return"), "{text}");
    assert!(!text.contains("never runs") && !text.contains("did not finish within"), "the file stops at the stuck call, at the limit: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_handler_call_gets_the_limits_of_run() {
    let p = project(
        "memory_limit_mb = 16\ninstruction_limit = 2000000",
        &[
            (
                "greedy.lua",
                "agent.on('audioVideoSession', 'added', function(e)\n  local s, t = string.rep('x', 1000000), {}\n  for i = 1, 100 do t[i] = s .. i end\nend)\n\
                 agent.on('audioVideoSession', 'updated', function(e) string.find(('a'):rep(40), ('a*'):rep(40) .. 'b') end)\n\
                 agent.on('audioVideoSession', 'deleted', function(e) agent.log.info('still here') end)\n\
                 agent.on('conversation', 'added', function(e) local x = 0 for i = 1, 300000 do x = x + i end end)\n",
            ),
            (
                "greedy_test.lua",
                "test.load('greedy.lua')\n\
                 test.case('memory', function() test.dispatch(test.event('audioVideoSession', 'added')) end)\n\
                 test.case('backtracking', function() test.dispatch(test.event('audioVideoSession', 'updated')) end)\n\
                 test.case('the next event proceeds', function()\n  test.dispatch(test.event('audioVideoSession', 'deleted'))\n  test.eq(test.logs()[1].message, 'still here')\nend)\n\
                 test.case('a budget per call', function()\n  for _ = 1, 5 do test.dispatch(test.event('conversation', 'added')) end\nend)\n",
            ),
        ],
    );
    let (code, text) = run_tests(p.path()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not ok 1 - memory\n#   memory limit exceeded (scripts.memory_limit_mb)"), "{text}");
    assert!(text.contains("not ok 2 - backtracking\n#   instruction limit exceeded (scripts.instruction_limit)"), "{text}");
    assert!(text.contains("ok 3 - the next event proceeds\n") && text.contains("ok 4 - a budget per call\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_state_is_committed_after_each_event_and_repeated_failures_pause_as_in_run() {
    let p = project(
        "max_consecutive_failures = 3",
        &[
            (
                "count.lua",
                "agent.on('audioVideoSession', 'added', function(e) agent.state.n = (agent.state.n or 0) + 1 end)\n\
                 agent.on('audioVideoSession', 'updated', function(e)\n  agent.state.n = agent.state.n + 10\n  error('after the change')\nend)\n\
                 agent.on('audioVideoSession', 'deleted', function(e) agent.state.f = print end)\n\
                 agent.on('audioVideoSession', 'deleted', function(e) agent.log.info('second handler ran') end)\n",
            ),
            (
                "count_test.lua",
                "test.load('count.lua')\n\
                 test.case('kept across events', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\n  \
                 test.dispatch(test.event('audioVideoSession', 'added'))\n  test.eq(agent.state.n, 2)\nend)\n\
                 test.case('a change before an error is kept', function()\n  \
                 test.fails(function() test.dispatch(test.event('audioVideoSession', 'updated')) end, 'count.lua:4: after the change')\n  \
                 test.eq(agent.state.n, 12)\nend)\n\
                 test.case('a state that cannot be saved is an error', function()\n  \
                 test.fails(function() test.dispatch(test.event('audioVideoSession', 'deleted')) end, 'agent.state not saved: agent.state.f: a function cannot be saved')\n  \
                 test.eq(test.logs()[1].message, 'second handler ran')\n  agent.state.f = nil\nend)\n\
                 test.case('paused after 3 failures in a row', function()\n  \
                 for _ = 1, 3 do test.fails(function() test.dispatch(test.event('audioVideoSession', 'updated')) end, 'after the change') end\n  \
                 test.fails(function() test.dispatch(test.event('audioVideoSession', 'added')) end, 'paused after 3 consecutive failures')\n  \
                 test.eq(agent.state.n, 42)\nend)\n",
            ),
        ],
    );
    let (code, text) = run_tests(p.path()).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("4 passed, 0 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_reads_the_same_in_test_as_in_run() {
    const RULE: &str = "agent.on('audioVideoSession', 'added', function(e)\n  local t = nil\n  return t.x\nend)\n";
    // In `run`, against the simulator.
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rule.lua", RULE);
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "")).await;
    let call = sim.start_call(answered_call()).unwrap();
    let failed = agent.expect("the handler error", |o| matches!(o, ScriptOutput::HandlerError { script, .. } if script == "rule")).await;
    let ScriptOutput::HandlerError { error, .. } = failed else { unreachable!() };
    sim.end_call(call);
    agent.stop().await;
    let in_run = error.lines().next().unwrap().to_string();
    assert!(in_run.starts_with("rule.lua:3: "), "{in_run}");

    // In `test`.
    let p = project(
        "",
        &[
            ("rule.lua", RULE),
            ("rule_test.lua", "test.load('rule.lua')\ntest.case('fails', function()\n  test.dispatch(test.event('audioVideoSession', 'added'))\nend)\n"),
        ],
    );
    let (code, text) = run_tests(p.path()).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("not ok 1 - fails\n#   {in_run}\n")), "`run` said {in_run:?}; test said: {text}");
    assert!(text.contains("#   \trule.lua:3: in function <rule.lua:1>\n#   \trule_test.lua:3: in function <rule_test.lua:2>"), "{text}");
}
