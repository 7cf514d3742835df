//! Smaller README promises of the `agent` API and the scripts directory, through the real
//! script host (no pool needed).

mod common;

use common::{expect, messages_of, write};
use std::sync::Arc;
use std::time::Duration;
use ucwa_agent::script::{Limits, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use ucwa_agent::store::Store;
use ucwa_agent::ucwa::{batch, Event, Origin};

fn event(seq: u64) -> Vec<Event> {
    let body = std::fs::read(format!("{}/tests/fixtures/events/audioVideoSession-added.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
    let mut ev = batch::parse(&body, &origin).unwrap().events.remove(0);
    ev.seq = seq;
    vec![ev]
}

async fn host_in(dir: &std::path::Path, settings: ScriptSettings) -> ScriptHost {
    ScriptHost::with_env(dir.to_path_buf(), ScriptEnv::new(settings, Arc::new(Store::in_memory())))
}

#[tokio::test]
async fn the_agent_table_does_what_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
      local top_level = { pcall(agent.ucwa.get, "/x") }
      agent.log.info("top level: " .. tostring(top_level[1]) .. " " .. top_level[2])
      local action = { pcall(agent.people.get, "sip:bob@contoso.com") }
      agent.log.info("action: " .. tostring(action[1]) .. " " .. action[2])
      local calls = 0
      local function count() calls = calls + 1 end
      agent.on("audioVideoSession", count)
      agent.on("audioVideoSession", count)
      agent.on("audioVideoSession", function(e)
        agent.log.info("calls " .. calls)
        local ok, err = pcall(agent.http.request, {url = "https://elsewhere.example/hook"})
        agent.log.info(type(err) .. ": " .. err)
        local ok2, err2 = pcall(agent.every, 5, print)
        agent.log.info(tostring(ok2) .. " " .. tostring(err2))
        print("printed", 42)
        agent.log.info(next(agent.config) == nil and "empty" or "set")
      end)
    "#;
    write(dir.path(), "api.lua", script);
    let host = host_in(dir.path(), ScriptSettings::new(Limits::default())).await;
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let top = messages_of(&mut out, "api", 2).await;
    assert!(top[0].starts_with("top level: false ") && top[0].contains("agent.ucwa.get: only in handlers and timers"), "{top:?}");
    // An action says so under its own name, at the script's line (not the agent.ucwa call inside it).
    assert!(top[1].starts_with("action: false api.lua:4: agent.people.get: only in handlers and timers"), "{top:?}");
    host.dispatch(event(1));
    let lines = messages_of(&mut out, "api", 5).await;
    assert_eq!(lines[0], "calls 2", "subscribing twice calls twice");
    assert!(
        lines[1].starts_with("string: ") && lines[1].contains("elsewhere.example is not in scripts.http_allow"),
        "errors are plain strings naming the host: {}",
        lines[1]
    );
    assert!(lines[2].starts_with("false ") && lines[2].contains("ms must be at least 10"), "{}", lines[2]);
    assert_eq!(lines[3], "printed\t42", "print logs its arguments, tab-separated");
    assert_eq!(lines[4], "empty", "agent.config is {{}} when config.toml has no table for the script");
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn print_logs_at_info_and_the_script_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "named.lua", "print(agent.script.name, agent.script.version)\nagent.log.warn('careful', {n = 1})\n");
    let host = host_in(dir.path(), ScriptSettings::new(Limits::default())).await;
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let o = expect(&mut out, "print", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "named")).await;
    assert!(matches!(&o, ScriptOutput::Log { level: "info", message, version: 1, fields: None, .. } if message == "named\t1"), "{o:?}");
    let o = expect(&mut out, "warn", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "named")).await;
    assert!(matches!(&o, ScriptOutput::Log { level: "warn", message, fields: Some(f), .. } if message == "careful" && f["n"] == 1), "{o:?}");
}

#[tokio::test]
async fn zero_consecutive_failures_never_pauses() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "failing.lua", "agent.on('audioVideoSession', function(e) error('always ' .. e.seq) end)\n");
    let settings = ScriptSettings { max_consecutive_failures: 0, ..ScriptSettings::new(Limits::default()) };
    let host = host_in(dir.path(), settings).await;
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    for seq in 1..=15 {
        host.dispatch(event(seq));
    }
    for seq in 1..=15 {
        let o = expect(&mut out, "an error", |o| matches!(o, ScriptOutput::HandlerError { .. } | ScriptOutput::Paused { .. })).await;
        assert!(matches!(&o, ScriptOutput::HandlerError { error, .. } if error.contains(&format!("always {seq}"))), "{o:?}");
    }
}

#[tokio::test]
async fn editor_droppings_hidden_files_and_tests_are_not_scripts() {
    let dir = tempfile::tempdir().unwrap();
    for name in [".#rule.lua", "rule.lua~", ".rule.lua.swp", "4913", ".hidden.lua", "rule_test.lua", "notes.txt"] {
        write(dir.path(), name, "error('not a script')\n");
    }
    write(dir.path(), "rule.lua", "agent.on('me', function() end)\n");
    let host = host_in(dir.path(), ScriptSettings::new(Limits::default())).await;
    let failed = host.load_dir().await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(host.scripts(), [("rule".to_string(), 1)]);
}

#[tokio::test]
async fn agent_state_held_in_a_local_survives_reloads_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
      local S = agent.state
      S.started = (S.started or 0) + 1
      agent.on("audioVideoSession", function(e)
        S.n = (S.n or 0) + 1
        agent.log.info("n " .. S.n .. " " .. tostring(agent.state.n) .. " started " .. S.started)
      end)
    "#;
    write(dir.path(), "counter.lua", script);
    let store = Arc::new(Store::in_memory());
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(ScriptSettings::new(Limits::default()), store.clone()));
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    host.dispatch(event(1));
    host.dispatch(event(2));
    assert_eq!(messages_of(&mut out, "counter", 2).await, ["n 1 1 started 1", "n 2 2 started 1"]);
    // A new version: its top level runs on the state as committed when it is built (here,
    // once the counter is committed); at the swap it gets what the old version stored since,
    // in the same table its local holds, and keeps what its own top level set.
    let committed = |key: &str, want: &str| store.state("counter").unwrap().iter().any(|(k, v)| k == key && v == want);
    common::eventually("n = 2 committed", || committed("n", "2")).await;
    host.load_file(&dir.path().join("counter.lua")).await.unwrap();
    host.dispatch(event(3));
    assert_eq!(messages_of(&mut out, "counter", 1).await, ["n 3 3 started 2"]);
    host.shutdown(Duration::from_secs(5)).await;
    // A restart: a new host on the same database.
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(ScriptSettings::new(Limits::default()), store));
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    host.dispatch(event(4));
    assert_eq!(messages_of(&mut out, "counter", 1).await, ["n 4 4 started 3"]);
}

/// docs/SCRIPTING.md's API table (`| function | what it does |`, moved out of README) names every
/// field of the real `agent` table, and every function of its sub-tables (`agent.state` and
/// `agent.config` hold data): an API added without a row, or the table gone, fails here.
#[tokio::test]
async fn the_scripting_reference_names_every_field_of_the_agent_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SCRIPTING.md")).unwrap();
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| l.trim() != "| function | what it does |")
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_start_matches('|').split(" | ").next().unwrap_or_default())
        .collect();
    assert!(rows.len() >= 15, "docs/SCRIPTING.md: the `agent` API table was not found ({} rows)", rows.len());
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
      local names = {}
      for k, v in pairs(agent) do
        if type(v) == "table" and k ~= "state" and k ~= "config" then
          for k2 in pairs(v) do names[#names + 1] = k .. "." .. k2 end
        else
          names[#names + 1] = k
        end
      end
      table.sort(names)
      agent.log.info(table.concat(names, " "))
    "#;
    write(dir.path(), "names.lua", script);
    let host = host_in(dir.path(), ScriptSettings::new(Limits::default())).await;
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let names = messages_of(&mut out, "names", 1).await.remove(0);
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    // `word` appears in `cell` after one of `before` and not followed by more of a name.
    let mentions = |cell: &str, word: &str, before: &[char]| {
        cell.match_indices(word).any(|(i, _)| cell[..i].ends_with(before) && !cell[i + word.len()..].starts_with(ident))
    };
    let mut missing = Vec::new();
    for name in names.split(' ') {
        let found = match name.split_once('.') {
            None => rows.iter().any(|r| mentions(r, &format!("agent.{name}"), &['`', ' ', ','])),
            Some((table, field)) => rows.iter().filter(|r| mentions(r, &format!("agent.{table}"), &['`', ' ', ','])).any(|r| mentions(r, field, &['.', '/'])),
        };
        if !found {
            missing.push(format!("agent.{name}"));
        }
    }
    assert!(missing.is_empty(), "docs/SCRIPTING.md's API table has no row for {missing:?} (the agent table has: {names})");
    host.shutdown(Duration::from_secs(5)).await;
}
