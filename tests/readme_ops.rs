//! README promises about what operators see: log lines (repeat suppression, a failed load
//! logged once, every event at debug), SIGINT, the LuaLS types, and hot-reload details.

mod common;

use common::*;
use ucwa_agent::script::ScriptOutput;

/// How many of 1..=n are powers of two: the lines a repeated error gets (1st, 2nd, 4th, …).
fn powers_of_two_up_to(n: u64) -> usize {
    (0..64).filter(|i| 1u64 << i <= n).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_say_what_the_readme_says() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "fail.lua", "agent.on('*', function(e) error('same every time') end)\n");
    write(dir.path(), "seen.lua", "agent.on('*', function(e) agent.state.n = (agent.state.n or 0) + 1 end)\n");
    write(dir.path(), "broken.lua", "agent.on('*', function(e)\n  this is not lua\nend)\n");
    write(dir.path(), "fields.lua", "agent.on('agent', 'signedIn', function(e) agent.log.info('answer', { answer = 42, who = { uri = 'sip:a@b.c' } }) end)\n");
    let config = config_file(&sim, dir.path(), "max_consecutive_failures = 0");
    let log = dir.path().join("agent.log");
    let mut agent = agent_command(&["--log-format", "json", "run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "debug")])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn_guarded();
    wait_available(&sim).await;
    // A second broken version, saved while running (the watcher loads it): logged once too,
    // and neither is logged again for the events that follow.
    write(dir.path(), "broken.lua", "agent.on('*', function(e)\n  local x = 1\n  this is still not lua\nend)\n");
    file_contains(&log, "broken.lua:3:").await;
    for _ in 0..2 {
        let c = sim.start_call(answered_call()).unwrap();
        file_contains(&log, "\"type\":\"updated\"").await;
        sim.end_call(c);
    }
    eventually("both calls ended", || sim.counters()["calls_ended"] == 2).await;
    file_contains(&log, "\"type\":\"deleted\"").await;
    signal(&agent, "-INT");
    assert_eq!(exit_within(&mut agent, PATIENCE).await.0, Some(0), "SIGINT stops the agent as SIGTERM does");
    assert_eq!(sim.counters()["applications_deleted"], 1);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let events = saved_state(&dir.path().join(".state/agent.db"), "seen")["n"].as_u64().unwrap();
    let failed = lines
        .iter()
        .filter(|l| l["script"] == "fail" && l["message"].as_str().is_some_and(|m| m.starts_with("handler failed: fail.lua:1: same every time")))
        .count();
    assert_eq!(failed, powers_of_two_up_to(events), "{events} identical errors are logged the 1st, 2nd, 4th, … time");
    for line in ["broken.lua:2:", "broken.lua:3:"] {
        let not_loaded = lines
            .iter()
            .filter(|l| l["script"] == "broken" && l["message"].as_str().is_some_and(|m| m.starts_with("script not loaded") && m.contains(line)))
            .count();
        assert_eq!(not_loaded, 1, "a version that fails to load ({line}) is logged once");
    }
    let answer = lines.iter().find(|l| l["script"] == "fields" && l["message"] == "answer").expect("the script's line");
    assert_eq!(answer["fields"], serde_json::json!({"answer": 42, "who": {"uri": "sip:a@b.c"}}), "nested JSON, numbers as numbers: {answer}");
    assert!(
        !lines.iter().any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("hyper") || t.starts_with("reqwest"))),
        "RUST_LOG=debug leaves the HTTP libraries at warn"
    );
    let debug_events = lines.iter().filter(|l| l["message"] == "event" && l["level"] == "DEBUG").count() as u64;
    assert_eq!(debug_events, events, "RUST_LOG=debug logs every event the scripts got");
}

#[tokio::test]
async fn the_luals_types_describe_the_whole_agent_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let types = std::fs::read_to_string(root.join("types/agent.lua")).unwrap();
    // The agent table as a script sees it: each name and type, and each subtable's functions.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "list.lua",
        r#"local out = {}
          for k, v in pairs(agent) do
            out[#out + 1] = k .. " " .. type(v)
            if type(v) == "table" and k ~= "state" and k ~= "config" then
              for f, g in pairs(v) do if type(g) == "function" then out[#out + 1] = k .. "." .. f .. " function" end end
            end
          end
          table.sort(out)
          agent.log.info(table.concat(out, ";"))"#,
    );
    let host = ucwa_agent::script::ScriptHost::new(dir.path().to_path_buf(), ucwa_agent::script::Limits::default());
    let mut out = host.subscribe();
    host.load_dir().await.unwrap();
    let listing = messages_of(&mut out, "list", 1).await.remove(0);
    let class_of = |field: &str| {
        types.lines().find_map(|l| l.strip_prefix(&format!("---@field {field} ")).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string()))
    };
    for item in listing.split(';') {
        let (path, kind) = item.split_once(' ').unwrap();
        let documented = match path.split_once('.') {
            None if kind == "function" => types.contains(&format!("function agent.{path}(")),
            None => class_of(path).is_some(),
            Some((table, f)) => class_of(table).is_some_and(|class| types.contains(&format!("function {class}.{f}("))),
        };
        assert!(documented, "agent.{path} ({kind}) is missing from types/agent.lua");
    }
}

#[tokio::test]
async fn saves_in_a_burst_reload_once_and_a_renamed_away_script_is_unloaded() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rule.lua", "agent.on('me', function() end) -- 0\n");
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 3000")).await;
    let mut out = agent.out.resubscribe();
    // Five saves back to back, inside one debounce window (only a stall of 3 s between two of
    // them would split it): one reload, of the last one.
    for n in 1..=5 {
        write(dir.path(), "rule.lua", &format!("agent.on('me', function() end) agent.log.info('version saved {n}')\n"));
    }
    // The top level logs while it is built, then the version is announced.
    assert_eq!(messages_of(&mut out, "rule", 1).await, ["version saved 5"]);
    let o = expect(&mut out, "the reload", |o| matches!(o, ScriptOutput::Loaded { script, .. } if script == "rule")).await;
    assert!(matches!(o, ScriptOutput::Loaded { version: 2, .. }), "{o:?}");
    // Renamed to something that is not a script: unloaded.
    std::fs::rename(dir.path().join("rule.lua"), dir.path().join("rule.lua.disabled")).unwrap();
    expect(&mut out, "the unload", |o| matches!(o, ScriptOutput::Unloaded { script } if script == "rule")).await;
    while let Ok(o) = out.try_recv() {
        assert!(!matches!(&o, ScriptOutput::Loaded { script, .. } if script == "rule"), "one reload for the burst: {o:?}");
    }
    agent.stop().await;
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation other than `-`/`_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks), numbered as GitHub numbers
/// repeated ones.
fn anchors(text: &str) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut out = std::collections::HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let s = slug(line.trim_start_matches('#'));
        let n = seen.entry(s.clone()).or_default();
        out.insert(if *n == 0 { s.clone() } else { format!("{s}-{n}") });
        *n += 1;
    }
    out
}

/// README is the entry to the docs: its table of contents and every relative link in README and
/// docs/*.md lead to a file that exists and, with `#anchor`, to a heading there. The moved
/// reference (docs/SCRIPTING.md, docs/SIMULATOR.md) must exist and be linked from README.
#[test]
fn every_link_in_the_docs_leads_somewhere() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for doc in ["docs/SCRIPTING.md", "docs/SIMULATOR.md"] {
        assert!(root.join(doc).is_file(), "{doc} is missing");
        assert!(readme.contains(&format!("]({doc})")), "README does not link {doc}");
    }
    for section in ["## Try it", "## Write scripts", "## Run in production"] {
        assert!(readme.lines().any(|l| l == section), "README has no `{section}`");
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap();
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').map_or((target, None), |(p, a)| (p, Some(a)));
                let dest = if path.is_empty() { file.clone() } else { dir.join(path) };
                let at = format!("{}:{}: {target}", file.strip_prefix(root).unwrap().display(), n + 1);
                if !dest.exists() {
                    problems.push(format!("{at}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let dest_text = std::fs::read_to_string(&dest).unwrap();
                    if !anchors(&dest_text).contains(anchor) {
                        problems.push(format!("{at}: no heading with that anchor"));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
