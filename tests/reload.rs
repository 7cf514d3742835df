//! Hot reload users can trust: real files, the real watcher, the simulator.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use ucwa_agent::script::ScriptOutput;
use ucwa_agent::sim::CallSpec;

fn loaded(script: &'static str, version: u64) -> impl Fn(&ScriptOutput) -> bool {
    move |o| matches!(o, ScriptOutput::Loaded { script: s, version: v } if s == script && *v == version)
}

/// Saves as editors do: a temporary file in the same folder, renamed over the target.
fn save(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn says(word: &str) -> String {
    format!("agent.on('audioVideoSession', 'added', function(e) agent.log.info('{word}') end)\n")
}

#[tokio::test]
async fn a_symlinked_script_reloads_when_its_target_changes() {
    let sim = start_sim(sim_config()).await;
    let root = tempfile::tempdir().unwrap();
    let (scripts, rules) = (root.path().join("scripts"), root.path().join("rules"));
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    save(&rules.join("rule.lua"), &says("one"));
    std::os::unix::fs::symlink("../rules/rule.lua", scripts.join("rule.lua")).unwrap();
    let mut agent = start_agent(&sim, &config_text(&sim, &scripts, "reload_debounce_ms = 20")).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["one"]);
    sim.end_call(c);
    save(&rules.join("rule.lua"), &says("two"));
    agent.expect("version 2", loaded("rule", 2)).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["two"]);
    agent.stop().await;
}

#[tokio::test]
async fn a_symlinked_scripts_directory_is_followed_when_repointed() {
    let sim = start_sim(sim_config()).await;
    let root = tempfile::tempdir().unwrap();
    for (v, word) in [("v1", "one"), ("v2", "two")] {
        std::fs::create_dir_all(root.path().join(v)).unwrap();
        save(&root.path().join(v).join("rule.lua"), &says(word));
    }
    let link = root.path().join("scripts");
    std::os::unix::fs::symlink("v1", &link).unwrap();
    let mut agent = start_agent(&sim, &config_text(&sim, &link, "reload_debounce_ms = 20")).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["one"]);
    sim.end_call(c);
    // Deploy: point the link at the new release atomically.
    std::os::unix::fs::symlink("v2", root.path().join("scripts.new")).unwrap();
    std::fs::rename(root.path().join("scripts.new"), &link).unwrap();
    agent.expect("version 2", loaded("rule", 2)).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("rule", 1).await, ["two"]);
    agent.stop().await;
}

#[tokio::test]
async fn on_unload_runs_before_a_version_goes() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = |v: &str| format!("agent.on_unload(function() agent.log.info('bye {v} ' .. agent.script.version) end)\n");
    save(&dir.path().join("tidy.lua"), &script("a"));
    let mut agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 20")).await;
    save(&dir.path().join("tidy.lua"), &script("b"));
    // Version 2 is announced when built; the swap (and version 1's on_unload) follows.
    agent.expect("version 2", loaded("tidy", 2)).await;
    assert_eq!(agent.messages("tidy", 1).await, ["bye a 1"]);
    std::fs::remove_file(dir.path().join("tidy.lua")).unwrap();
    assert_eq!(agent.messages("tidy", 1).await, ["bye b 2"]);
    agent.stop().await;
}

#[tokio::test]
async fn sighup_applies_script_settings_and_rescans() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    save(&dir.path().join("greet.lua"), "agent.on('audioVideoSession', 'added', function(e) agent.log.info(agent.config.word) end)\n");
    let config = dir.path().join("config.toml");
    let text = |word: &str| config_text(&sim, dir.path(), &format!("watch = false\n[scripts.config.greet]\nword = \"{word}\""));
    std::fs::write(&config, text("one")).unwrap();
    let mut agent = start_agent_from_file(&sim, &config).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("greet", 1).await, ["one"]);
    sim.end_call(c);
    // A script added now is not loaded (watch = false) until a reload rescans.
    save(&dir.path().join("new.lua"), &says("new"));
    let mut quiet = agent.out.resubscribe();
    // A broken file changes nothing: the settings and the scripts stay as they run.
    std::fs::write(&config, "[scripts\n").unwrap();
    let _ = agent.reloader.reload().await;
    wait_available(&sim).await;
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("greet", 1).await, ["one"], "the running settings stay");
    sim.end_call(c);
    while let Ok(o) = quiet.try_recv() {
        assert!(!matches!(&o, ScriptOutput::Loaded { script, .. } | ScriptOutput::Log { script, .. } if script == "new"), "not watched, not rescanned: {o:?}");
    }
    // A good one applies, and the script added meanwhile is picked up by the rescan.
    std::fs::write(&config, text("two")).unwrap();
    let _ = agent.reloader.reload().await;
    // The two scripts run in parallel: one stream each.
    let mut new = agent.out.resubscribe();
    wait_available(&sim).await;
    sim.start_call(answered_call()).unwrap();
    assert_eq!(agent.messages("greet", 1).await, ["two"]);
    assert_eq!(messages_of(&mut new, "new", 1).await, ["new"]);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_saves_under_load_lose_duplicate_and_reorder_nothing() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let rule = |n: usize| {
        if n % 7 == 3 {
            format!("agent.on('audioVideoSession', function(e)\n  broken (\nend) -- save {n}\n")
        } else {
            format!("agent.on('audioVideoSession', function(e) agent.log.info(e.seq .. ' v' .. agent.script.version) end) -- save {n}\n")
        }
    };
    save(&dir.path().join("rule.lua"), &rule(0));
    save(&dir.path().join("witness.lua"), "agent.on('audioVideoSession', function(e) agent.log.info(tostring(e.seq)) end)\n");
    let agent = start_agent(&sim, &config_text(&sim, dir.path(), "reload_debounce_ms = 5")).await;
    let mut rule_out = agent.out.resubscribe();
    let mut witness_out = agent.out.resubscribe();
    let calls = {
        let spec = CallSpec { ring_ms: Some(5), duration_ms: Some(40), ..CallSpec::default() };
        let sim_origin = sim.origin().to_string();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..60 {
                let _ = http.post(format!("{sim_origin}/sim/v1/calls")).json(&spec).send().await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for n in 1..=100 {
        save(&dir.path().join("rule.lua"), &rule(n));
        tokio::time::sleep(Duration::from_millis(12)).await;
    }
    calls.await.unwrap();
    // 60 calls, each with a session added, (usually) updated, and deleted. Once every call has
    // ended the agent stops: it lets both scripts finish what was delivered, so each stream
    // then holds everything its script did.
    eventually("every call ended", || sim.counters()["calls_ended"].as_u64().unwrap() >= 60).await;
    agent.stop().await;
    let mut witness = Vec::new();
    while let Ok(o) = witness_out.try_recv() {
        if let ScriptOutput::Log { script, message, .. } = o {
            if script == "witness" {
                witness.push(message.parse::<u64>().unwrap());
            }
        }
    }
    let mut seen = Vec::new();
    let mut versions = Vec::new();
    let mut failed_loads = 0;
    while let Ok(o) = rule_out.try_recv() {
        match o {
            ScriptOutput::Log { script, message, .. } if script == "rule" => {
                let (seq, v) = message.split_once(" v").unwrap();
                seen.push(seq.parse::<u64>().unwrap());
                versions.push(v.parse::<u64>().unwrap());
            }
            ScriptOutput::LoadFailed { script, .. } if script == "rule" => failed_loads += 1,
            ScriptOutput::HandlerError { script, error, .. } if script == "rule" => {
                panic!("rule failed: {error}")
            }
            _ => {}
        }
    }
    assert!(witness.len() >= 120, "the calls produced events: {}", witness.len());
    assert_eq!(seen, witness, "the reloaded script saw exactly the events, in order");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "versions only go forward: {versions:?}");
    assert!(versions.last().unwrap() > &1, "reloads happened during the stream");
    assert!(failed_loads > 0, "some saves were broken and refused");
}

/// Review of 2026-12-04, missing test 5: a SIGHUP applies the `[scripts]` limits, `http_allow`
/// and `max_consecutive_failures` to the running scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_scripts_limits_allowlist_and_failure_count() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // About 3 million instructions, then a request to a closed port of an allowed host.
    save(
        &dir.path().join("busy.lua"),
        "agent.on('audioVideoSession', 'added', function(e)\n  local x = 0\n  for i = 1, 1000000 do x = x + i end\n  agent.log.info('counted')\nend)\n",
    );
    save(
        &dir.path().join("hook.lua"),
        "agent.on('audioVideoSession', 'added', function(e)\n  local ok, err = pcall(agent.http.request, {url = 'http://127.0.0.1:9/hook', timeout = 2000})\n  agent.log.info(ok and 'sent' or err)\nend)\n",
    );
    save(&dir.path().join("fail.lua"), "agent.on('audioVideoSession', function(e) error('always') end)\n");
    let config = dir.path().join("config.toml");
    let text = |extra: &str| config_text(&sim, dir.path(), &format!("watch = false\n{extra}"));
    std::fs::write(&config, text("instruction_limit = 100000000\nhttp_allow = [\"127.0.0.1\"]\nmax_consecutive_failures = 100")).unwrap();
    let agent = start_agent_from_file(&sim, &config).await;
    let (mut busy, mut hook) = (agent.out.resubscribe(), agent.out.resubscribe());
    let c = sim.start_call(answered_call()).unwrap();
    assert_eq!(messages_of(&mut busy, "busy", 1).await, ["counted"]);
    let said = messages_of(&mut hook, "hook", 1).await;
    assert!(!said[0].contains("http_allow"), "allowed before the reload: {said:?}");
    sim.end_call(c);
    eventually("the call ended", || sim.counters()["calls_ended"] == 1).await;

    // Lower limits, an empty allowlist, pause after 2 failures: applied by a reload.
    std::fs::write(&config, text("instruction_limit = 1000000\nhttp_allow = []\nmax_consecutive_failures = 2")).unwrap();
    let out = agent.out.resubscribe();
    // (The scripts load concurrently: their versions 2 come in any order, so one receiver each.)
    let mut loads: Vec<_> = ["busy", "hook", "fail"].into_iter().map(|s| (s, out.resubscribe())).collect();
    let _ = agent.reloader.reload().await;
    for (script, o) in &mut loads {
        let script = *script;
        expect(o, &format!("{script} reloaded"), |o| matches!(o, ScriptOutput::Loaded { script: s, version: 2 } if s == script)).await;
    }
    let (mut errors, mut paused, mut hook) = (out.resubscribe(), out.resubscribe(), out.resubscribe());
    wait_available(&sim).await;
    let c = sim.start_call(answered_call()).unwrap();
    let stopped = expect(&mut errors, "busy stopped", |o| matches!(o, ScriptOutput::HandlerError { script, .. } if script == "busy")).await;
    assert!(matches!(&stopped, ScriptOutput::HandlerError { error, .. } if error.contains("instruction limit exceeded")), "{stopped:?}");
    let said = messages_of(&mut hook, "hook", 1).await;
    assert!(said[0].contains("127.0.0.1 is not in scripts.http_allow"), "{said:?}");
    let p = expect(&mut paused, "fail paused", |o| matches!(o, ScriptOutput::Paused { script, .. } if script == "fail")).await;
    assert!(matches!(p, ScriptOutput::Paused { failures: 2, .. }), "{p:?}");
    sim.end_call(c);
    agent.stop().await;
}

#[tokio::test]
async fn a_script_that_is_a_symlink_to_nothing_is_said_not_skipped_silently() {
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "witness.lua", &says("witness"));
    // A deploy that linked a release's file that is not there (yet).
    std::os::unix::fs::symlink(dir.path().join("releases/v2/calls.lua"), dir.path().join("calls.lua")).unwrap();
    let config = config_file(&sim, dir.path(), "");
    let log = dir.path().join("agent.log");
    let mut agent = spawn_agent(&config, std::fs::File::create(&log).unwrap());
    wait_available(&sim).await;
    file_contains(&log, "not loaded: a symlink whose target cannot be read (No such file or directory (os error 2))").await;
    assert!(std::fs::read_to_string(&log).unwrap().contains("calls.lua"), "the line names the file");
    agent.kill().unwrap();
}
