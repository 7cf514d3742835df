//! Isolation: what a hostile or careless script can do to the agent, next to a witness script
//! that logs every event. Each case is a repro from issue 11; the witness must keep getting
//! every event, in order, whatever the hog does.

mod common;

use common::{events, expect, write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use ucwa_agent::script::{Limits, LogRate, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use ucwa_agent::store::Store;

const WITNESS: &str = r#"agent.on("audioVideoSession", function(e) agent.log.info("saw " .. e.seq) end)"#;

fn settings(limits: Limits) -> ScriptSettings {
    ScriptSettings { http_allow: vec!["127.0.0.1".into()], ..ScriptSettings::new(limits) }
}

struct Host {
    host: ScriptHost,
    out: broadcast::Receiver<ScriptOutput>,
    dir: tempfile::TempDir,
}

async fn host_with(settings: ScriptSettings, store: Arc<Store>, scripts: &[(&str, &str)]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in scripts {
        write(dir.path(), name, text);
    }
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(settings, store));
    let out = host.subscribe();
    host.load_dir().await.unwrap();
    Host { host, out, dir }
}

async fn host(limits: Limits, scripts: &[(&str, &str)]) -> Host {
    host_with(settings(limits), Arc::new(Store::in_memory()), scripts).await
}

/// One script per hog (its code in a handler of every audioVideoSession event), and the witness.
fn hog_scripts(hogs: &[(&str, &str)]) -> Vec<(String, String)> {
    hogs.iter()
        .map(|(name, code)| (format!("{name}.lua"), format!("agent.on('audioVideoSession', function(e) {code} agent.log.info('returned') end)")))
        .chain([("witness.lua".to_string(), WITNESS.to_string())])
        .collect()
}

/// The witness's next `n` lines must be `saw first`, `saw first+1`, …
async fn witness_sees(out: &mut broadcast::Receiver<ScriptOutput>, first: u64, n: u64) {
    for seq in first..first + n {
        let want = format!("saw {seq}");
        let o = expect(out, &format!("witness: {want}"), |o| matches!(o, ScriptOutput::Log { script, .. } if script == "witness")).await;
        let ScriptOutput::Log { message, .. } = o else { unreachable!() };
        assert_eq!(message, want, "the witness sees every event, in order");
    }
}

async fn error_of(out: &mut broadcast::Receiver<ScriptOutput>, script: &str) -> String {
    let o = expect(
        out,
        &format!("an error of {script}"),
        |o| matches!(o, ScriptOutput::HandlerError { script: s, .. } | ScriptOutput::LoadFailed { script: s, .. } if s == script),
    )
    .await;
    match o {
        ScriptOutput::HandlerError { error, .. } | ScriptOutput::LoadFailed { error, .. } => error,
        _ => unreachable!(),
    }
}

async fn log_of(out: &mut broadcast::Receiver<ScriptOutput>, script: &str) -> String {
    let o = expect(out, &format!("a log line of {script}"), |o| matches!(o, ScriptOutput::Log { script: s, .. } if s == script)).await;
    let ScriptOutput::Log { message, .. } = o else { unreachable!() };
    message
}

#[tokio::test]
async fn a_timer_that_is_always_due_delays_only_its_own_script() {
    // About 18 ms of work every 10 ms, inside every limit: the timer is always due.
    let hog = r#"
      agent.every(10, function() local x = 0 for i = 1, 3e6 do x = x + i end end)
      agent.on("audioVideoSession", function(e) agent.log.info("hog saw " .. e.seq) end)
    "#;
    let h = host(Limits::default(), &[("hog.lua", hog), ("witness.lua", WITNESS)]).await;
    let (mut w, mut g) = (h.host.subscribe(), h.host.subscribe());
    h.host.dispatch(events(1, 10));
    witness_sees(&mut w, 1, 10).await;
    // The hog's own events are served between its timer runs, in order.
    for seq in 1..=10 {
        assert_eq!(log_of(&mut g, "hog").await, format!("hog saw {seq}"));
    }
    drop(h.out);
}

#[tokio::test]
async fn a_script_that_floods_the_log_has_its_lines_dropped_and_said_and_the_witness_logs_on() {
    // run's rate scaled down, so that every line fits the test's output stream (4,096).
    let rate = LogRate { burst: 1000, per_sec: 100 };
    let scripts =
        [("flood.lua", "agent.on('audioVideoSession', function(e) for i = 1, 50000 do agent.log.info('line ' .. i) end end)"), ("witness.lua", WITNESS)];
    let mut h = host_with(ScriptSettings { log_rate: Some(rate), ..settings(Limits::default()) }, Arc::new(Store::in_memory()), &scripts).await;
    h.host.dispatch(events(1, 1));
    let (mut flood, mut witness) = (Vec::new(), Vec::new());
    while let Ok(Ok(o)) = tokio::time::timeout(Duration::from_secs(2), h.out.recv()).await {
        if let ScriptOutput::Log { script, level, message, .. } = o {
            if script == "flood" {
                flood.push((level, message));
            } else {
                witness.push(message);
            }
        }
    }
    assert_eq!(witness, ["saw 1"]);
    let lines = flood.iter().filter(|(_, m)| m.starts_with("line ")).count();
    // A burst of 1,000, then 100 a second for as long as the handler ran (well under 10 s).
    assert!((1000..2000).contains(&lines), "{lines} lines logged of 50,000");
    assert_eq!(flood[..1000].iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(), (1..=1000).map(|i| format!("line {i}")).collect::<Vec<_>>());
    // Said at once, and not again within 10 s (the handler ran for less): one notice, not a flood.
    let said: Vec<_> = flood.iter().filter(|(_, m)| m.contains("log line(s) of this script dropped")).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!((said[0].0, said[0].1.as_str()), ("warn", "1 log line(s) of this script dropped: it logs more than 1000 lines at once or 100 a second"));
    // The next event's lines pass as the budget refills: the witness is untouched.
    h.host.dispatch(events(2, 1));
    witness_sees(&mut h.out, 2, 1).await;
    // A line is at most 64 KiB in run (its message, and its fields' JSON).
    let long = "agent.on('audioVideoSession', function(e) agent.log.info(string.rep('x', 100000)) agent.log.info('f', {big = string.rep('y', 100000)}) end)";
    write(h.dir.path(), "long.lua", long);
    h.host.load_dir().await.unwrap();
    h.host.dispatch(events(3, 1));
    let cut = log_of(&mut h.out, "long").await;
    assert!(cut.len() < 66_000 && cut.ends_with("… (34464 bytes cut)"), "{}", &cut[cut.len() - 40..]);
    let o = expect(&mut h.out, "the long fields", |o| matches!(o, ScriptOutput::Log { script, .. } if script == "long")).await;
    let ScriptOutput::Log { fields, .. } = o else { unreachable!() };
    assert_eq!(fields.unwrap()["cut"], "the fields were more than 65536 bytes of JSON");
}

#[tokio::test]
async fn an_event_nested_too_deep_for_a_lua_value_is_an_error_of_the_script_that_reads_it() {
    use ucwa_agent::ucwa::{batch, Origin};
    let script = "agent.on('audioVideoSession', function(e) agent.log.info('href ' .. e.href) agent.log.info('resource ' .. tostring(e.resource)) \
                  for k in pairs(e) do end agent.log.info(type(e.raw)) end)";
    let mut h = host(Limits::default(), &[("deep.lua", script), ("witness.lua", WITNESS)]).await;
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(
        r#"{{"_links":{{"next":{{"href":"/e?ack=2"}}}},"sender":[{{"rel":"communication","href":"/c","events":[{{"link":{{"rel":"audioVideoSession","href":"/c/s"}},"type":"added","deep":{deep}}}]}}]}}"#
    );
    let mut events = batch::parse(body.as_bytes(), &Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap())).unwrap().events;
    events[0].seq = 1;
    h.host.dispatch(events);
    // (Collected in one pass: the witness's and the script's lines come in either order.)
    let (mut deep, mut witness, mut error) = (Vec::new(), Vec::new(), None);
    while error.is_none() || witness.is_empty() {
        match common::expect(&mut h.out, "the outputs of event 1", |_| true).await {
            ScriptOutput::Log { script, message, .. } if script == "deep" => deep.push(message),
            ScriptOutput::Log { message, .. } => witness.push(message),
            ScriptOutput::HandlerError { error: e, .. } => error = Some(e),
            _ => {}
        }
    }
    assert_eq!(witness, ["saw 1"]);
    // The cheap fields are there; no resource (the actions fetch it); pairs(e) goes through.
    assert_eq!(deep, ["href https://pool.contoso.com/c/s", "resource nil"]);
    let e = error.unwrap();
    assert!(e.contains("e.raw: the event's JSON cannot be made a Lua value") && e.contains("recursion limit"), "{e}");
}

#[tokio::test]
async fn finalizers_are_refused() {
    let at_top = r#"setmetatable({}, {__gc = function() while true do end end}) collectgarbage()"#;
    let in_handler = r#"
      agent.on("audioVideoSession", function(e)
        if e.seq == 1 then setmetatable({}, {__gc = function() while true do end end}) collectgarbage() end
        -- The agent's own metatables are out of reach, so no __gc can be slipped into them.
        assert(getmetatable(agent.json.array()) == false and getmetatable(e) == false and getmetatable(agent.every(1e6, print)) == false)
        agent.log.info("handled " .. e.seq)
      end)
    "#;
    let mut h = host(Limits::default(), &[("top.lua", at_top), ("handler.lua", in_handler), ("witness.lua", WITNESS)]).await;
    h.host.load_file(&h.dir.path().join("top.lua")).await.expect_err("a top level with __gc does not load");
    let e = error_of(&mut h.out, "top").await;
    assert!(e.contains("top.lua:1:") && e.contains("`__gc`"), "{e}");
    let mut w = h.host.subscribe();
    h.host.dispatch(events(1, 3));
    let e = error_of(&mut h.out, "handler").await;
    assert!(e.contains("handler.lua:3:") && e.contains("`__gc`"), "{e}");
    assert_eq!(log_of(&mut h.out, "handler").await, "handled 2");
    witness_sees(&mut w, 1, 3).await;
}

#[tokio::test]
async fn close_variables_are_refused_in_scripts_modules_and_load() {
    // Their `__close` ran outside every limit once a limit stopped the code around them: this
    // handler kept a core for ever; with an allocation after the memory limit instead, the
    // process grew until it was killed.
    let spins = "local x <close> = setmetatable({}, {__close = function() while true do end end})";
    let at_top = format!("agent.on('audioVideoSession', function(e) {spins} while true do end end)");
    let in_load = r#"
      agent.on("audioVideoSession", function(e)
        local f, err = load("local x < close > = nil")
        agent.log.info(tostring(f) .. " " .. err)
        local ok, err = pcall(require, "closer")
        agent.log.info(tostring(ok) .. " " .. tostring(err))
      end)
    "#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    write(&dir.path().join("lib"), "closer.lua", "do local y <close> = nil end return 1");
    write(dir.path(), "top.lua", &at_top);
    write(dir.path(), "loader.lua", in_load);
    write(dir.path(), "witness.lua", WITNESS);
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(settings(Limits::default()), Arc::new(Store::in_memory())));
    let mut out = host.subscribe();
    let failed = host.load_dir().await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].message.contains("`<close>` variables are not supported"), "{}", failed[0].message);
    let mut w = host.subscribe();
    host.dispatch(events(1, 1));
    assert_eq!(
        log_of(&mut out, "loader").await,
        "nil `<close>` variables are not supported: a limit that stops the code around one would run its `__close` outside every limit"
    );
    let e = log_of(&mut out, "loader").await;
    assert!(e.starts_with("false ") && e.contains("lib/closer.lua") && e.contains("`<close>` variables are not supported"), "{e}");
    witness_sees(&mut w, 1, 1).await;
}

#[tokio::test]
async fn c_functions_that_would_loop_forever_stop_at_the_instruction_limit() {
    let hogs = [
        ("find", r#"string.find(("a"):rep(40), ("a*"):rep(40) .. "b")"#),
        ("match", r#"(("a"):rep(40)):match(("a-"):rep(40) .. "b")"#),
        ("gsub", r#"string.gsub(("a"):rep(40), ("a*"):rep(40) .. "b", "")"#),
        ("gmatch", r#"for _ in (("a"):rep(40)):gmatch(("a*"):rep(40) .. "b") do end"#),
        ("rep", r#"string.rep("", math.maxinteger)"#),
        ("move", r#"table.move({}, 1, 2^62, 1)"#),
        ("concat", r#"table.concat(setmetatable({}, {__index = function() return "" end}), "", 1, 2^60)"#),
        ("remove", r#"local t = {} for i = 1, 1e5 do t[i] = i end for i = 1, 1e4 do table.remove(t, 1) end"#),
    ];
    let scripts = hog_scripts(&hogs);
    let refs: Vec<(&str, &str)> = scripts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // A low limit keeps the test quick in a debug build (the default is 50 million).
    let h = host(Limits { instructions: 2_000_000, ..Limits::default() }, &refs).await;
    let mut w = h.host.subscribe();
    let mut subs: Vec<_> = hogs.iter().map(|_| h.host.subscribe()).collect();
    h.host.dispatch(events(1, 2));
    witness_sees(&mut w, 1, 2).await;
    for ((name, _), out) in hogs.iter().zip(subs.iter_mut()) {
        for _ in 0..2 {
            let e = error_of(out, name).await;
            assert!(e.contains("instruction limit exceeded"), "{name}: {e}");
        }
    }
    drop(h.out);
}

#[tokio::test]
async fn running_out_of_memory_cannot_be_caught() {
    let limits = Limits { memory_bytes: 16 << 20, ..Limits::default() };
    let hog = r#"
      agent.on("audioVideoSession", function(e)
        local ok = pcall(function() local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(1000) .. i end end)
        agent.log.info("swallowed: " .. tostring(ok))
      end)
    "#;
    let mut h = host(limits, &[("hog.lua", hog), ("witness.lua", WITNESS)]).await;
    let mut w = h.host.subscribe();
    h.host.dispatch(events(1, 2));
    for _ in 0..2 {
        let e = error_of(&mut h.out, "hog").await;
        assert!(e.contains("memory limit exceeded"), "{e}");
    }
    witness_sees(&mut w, 1, 2).await;
    h.host.barrier().await;
    while let Ok(o) = h.out.try_recv() {
        assert!(!matches!(&o, ScriptOutput::Log { script, .. } if script == "hog"), "pcall swallowed the limit: {o:?}");
    }
}

#[tokio::test]
async fn values_out_of_range_are_refused_with_a_clear_error() {
    let probe = r#"
      agent.on("audioVideoSession", function(e)
        local cases = {
          function() agent.after(1e300, print) end,
          function() agent.every(0 / 0, print) end,
          function() agent.http.request{url = "http://127.0.0.1:9/x", timeout = math.huge} end,
          function() agent.http.request{url = "http://127.0.0.1:9/x", headers = {Host = "evil.example"}} end,
          function() agent.http.request{url = "http://127.0.0.1:9/x", headers = {["transfer-encoding"] = "chunked"}} end,
          function() agent.ucwa.get("http://user:pw@127.0.0.1:9/ucwa/x") end,
        }
        for i, f in ipairs(cases) do
          local ok, err = pcall(f)
          agent.log.info(i .. ": " .. tostring(ok) .. " " .. tostring(err))
        end
        local fired = false
        agent.after(1, function() agent.log.info("timers still fire") end)
      end)
    "#;
    let mut h = host(Limits::default(), &[("probe.lua", probe)]).await;
    h.host.dispatch(events(1, 1));
    let wants = [
        "ms must be between 0 and 31622400000",
        "ms must be between 0 and 31622400000",
        "`timeout` must be between 1 and 3600000 ms",
        "the `Host` header is set by the agent",
        "the `Transfer-Encoding` header is set by the agent",
        "hrefs with credentials (user:password@host) are refused",
    ];
    for (i, want) in wants.iter().enumerate() {
        let line = log_of(&mut h.out, "probe").await;
        assert!(line.starts_with(&format!("{}: false ", i + 1)) && line.contains(want), "case {}: {line}", i + 1);
        assert!(!line.contains("user:pw"), "the credentials are not repeated: {line}");
    }
    assert_eq!(log_of(&mut h.out, "probe").await, "timers still fire");
}

/// `ucwa_state_bytes_written_total` of a script.
fn state_written(host: &ScriptHost, script: &str) -> u64 {
    let text = host.env().metrics.render(None);
    let prefix = format!("ucwa_state_bytes_written_total{{script=\"{script}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_commit_writes_only_the_keys_that_changed() {
    let state_dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(state_dir.path()).unwrap());
    let limits = Limits { memory_bytes: 256 << 20, ..Limits::default() };
    let settings = ScriptSettings { state_max_bytes: 64 << 20, ..settings(limits) };
    let script = r#"
      agent.state.big = agent.state.big or ("x"):rep(20e6)
      agent.on("audioVideoSession", function(e) agent.state.count = (agent.state.count or 0) + 1 end)
    "#;
    let h = host_with(settings, store.clone(), &[("counter.lua", script)]).await;
    h.host.dispatch(events(1, 1));
    h.host.barrier().await;
    common::eventually("the first commit", || state_written(&h.host, "counter") > 0).await;
    let first = state_written(&h.host, "counter");
    assert!(first > 20_000_000, "the first commit writes the big string once: {first}");
    // A hundred commits of the counter (one every 10 ms while busy).
    for i in 0..100 {
        h.host.dispatch(events(2 + i, 1));
        tokio::time::sleep(Duration::from_millis(11)).await;
    }
    h.host.shutdown(Duration::from_secs(10)).await;
    let more = state_written(&h.host, "counter") - first;
    // Before, each commit wrote the whole 20 MB state again.
    assert!(more < 100 * 4096, "100 commits of a counter wrote {more} bytes");
    let saved = store.state("counter").unwrap();
    let count = saved.iter().find(|(k, _)| k == "count").map(|(_, v)| v.clone());
    assert_eq!(count.as_deref(), Some("101"));
    assert_eq!(saved.iter().find(|(k, _)| k == "big").map(|(_, v)| v.len()), Some(20_000_002));
}

#[tokio::test]
async fn state_that_could_not_be_read_back_is_refused_and_the_rest_kept() {
    let store = Arc::new(Store::in_memory());
    let settings = ScriptSettings { state_max_bytes: 4096, ..settings(Limits::default()) };
    let script = r#"
      agent.on("audioVideoSession", function(e)
        agent.state.kept = e.seq
        if e.seq == 1 then
          local t = {} local cur = t for i = 1, 126 do cur.next = {} cur = cur.next end
          agent.state.deep = t
        elseif e.seq == 2 then
          agent.state.deep = nil
          local a = {} a.self = {parent = a} agent.state.cyclic = a
        elseif e.seq == 3 then
          agent.state.cyclic = nil
          agent.state.big = ("x"):rep(5000)
        else
          agent.state.big = nil
        end
      end)
    "#;
    let mut h = host_with(settings.clone(), store.clone(), &[("keeper.lua", script)]).await;
    h.host.dispatch(events(1, 1));
    let e = error_of(&mut h.out, "keeper").await;
    assert!(e.contains("agent.state.deep.next") && e.contains("nested deeper than 100 levels"), "{e}");
    h.host.dispatch(events(2, 1));
    let e = error_of(&mut h.out, "keeper").await;
    assert!(e.contains("agent.state.cyclic.self.parent") && e.contains("cycle"), "{e}");
    h.host.dispatch(events(3, 1));
    let e = error_of(&mut h.out, "keeper").await;
    assert!(e.contains("scripts.state_max_bytes (4096 bytes of JSON)"), "{e}");
    h.host.dispatch(events(4, 1));
    h.host.shutdown(Duration::from_secs(10)).await;
    // What was saved loads back in a new host on the same database.
    let reader = r#"agent.log.info("kept " .. tostring(agent.state.kept) .. " big " .. tostring(agent.state.big))"#;
    let mut again = host_with(settings, store, &[]).await;
    write(again.dir.path(), "keeper.lua", reader);
    again.host.load_file(&again.dir.path().join("keeper.lua")).await.unwrap();
    assert_eq!(log_of(&mut again.out, "keeper").await, "kept 4 big nil");
}

#[tokio::test]
async fn values_built_in_rust_are_held_to_the_memory_limit() {
    // Each would ask Rust for gigabytes outside Lua's allocator (the process would abort).
    let hogs = [
        ("gsub", r#"string.gsub(("x"):rep(1e5), "^.*", ("%0"):rep(4e4))"#),
        ("encode", r#"local s = ("x"):rep(1 << 20) local t = {} for i = 1, 4000 do t[i] = s end agent.json.encode(t)"#),
        ("fields", r#"local s = ("x"):rep(1 << 20) local t = {} for i = 1, 4000 do t[i] = s end agent.log.info("big", t)"#),
    ];
    let scripts = hog_scripts(&hogs);
    let refs: Vec<(&str, &str)> = scripts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    // (16 MiB instead of the default 64: the same refusals, sooner in a debug build)
    let h = host(Limits { memory_bytes: 16 << 20, ..Limits::default() }, &refs).await;
    let mut w = h.host.subscribe();
    let mut subs: Vec<_> = hogs.iter().map(|_| h.host.subscribe()).collect();
    h.host.dispatch(events(1, 1));
    witness_sees(&mut w, 1, 1).await;
    for ((name, _), out) in hogs.iter().zip(subs.iter_mut()) {
        let e = error_of(out, name).await;
        assert!(e.contains("memory limit"), "{name}: {e}");
    }
}

#[tokio::test]
async fn no_protected_call_catches_a_limit() {
    let hogs = [
        // load's reader runs protected: the hook's error inside it must not be swallowed.
        ("reader_loop", r#"local R = function() while true do end end while true do load(R) end"#),
        ("reader_memory", r#"local ok = load(function() local t = {} while true do t[#t + 1] = {} end end) agent.log.info("swallowed")"#),
        // (`coroutine.close` running a `__close`: `<close>` variables are refused now, below.)
        // Numbers given as strings are converted by the C functions: they are charged too.
        ("move_str", r#"table.move({}, "1", "4611686018427387904", 1)"#),
        ("rep_str", r#"string.rep("", "1e12")"#),
        ("insert_str", r#"local t = {} for i = 1, 1e5 do t[i] = i end for i = 1, 100 do table.insert(t, "1", 5) end"#),
    ];
    let scripts = hog_scripts(&hogs);
    let refs: Vec<(&str, &str)> = scripts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let h = host(Limits { instructions: 2_000_000, memory_bytes: 16 << 20, ..Limits::default() }, &refs).await;
    let mut w = h.host.subscribe();
    let mut subs: Vec<_> = hogs.iter().map(|_| h.host.subscribe()).collect();
    h.host.dispatch(events(1, 1));
    witness_sees(&mut w, 1, 1).await;
    for ((name, _), out) in hogs.iter().zip(subs.iter_mut()) {
        let o = expect(out, &format!("{name}'s outcome"), |o| {
            matches!(o, ScriptOutput::HandlerError { script, .. } | ScriptOutput::Log { script, .. } | ScriptOutput::Stuck { script, .. } if script == name)
        })
        .await;
        let ScriptOutput::HandlerError { error, .. } = o else { panic!("{name}: {o:?}") };
        assert!(error.contains("limit exceeded"), "{name}: {error}");
    }
}

#[tokio::test]
async fn state_that_json_would_change_is_refused() {
    let script = r#"
      agent.on("audioVideoSession", function(e)
        local cases = {
          function() agent.state.mixed = {"a", "b", x = 1} end,
          function() agent.state.gaps = {[1] = "a", [3] = "c"} end,
          function() agent.state.far = {[1000000] = "far"} end,
          function() agent.state.float = {[1.5] = 1} end,
          function() local t = {} for i = 1, 60 do t = {t, t} end agent.state.shared = t end,
          -- Latin-1 text (a legacy webhook's answer): JSON would give back a list of its bytes.
          function() agent.state.name = "caf\xe9" end,
          function() agent.state.people = {{name = "M\xfcller"}} end,
        }
        for k in pairs(agent.state) do agent.state[k] = nil end
        cases[e.seq]()
      end)
    "#;
    let settings = ScriptSettings { state_max_bytes: 64 << 10, ..settings(Limits::default()) };
    let mut h = host_with(settings, Arc::new(Store::in_memory()), &[("keeper.lua", script)]).await;
    let wants = [
        "agent.state.mixed: a table with both list items and named keys",
        "agent.state.gaps: the key 3 cannot be saved",
        "agent.state.far: the key 1000000 cannot be saved",
        "agent.state.float: the key 1.5 cannot be saved",
        "over scripts.state_max_bytes (65536 bytes of JSON) at agent.state.shared",
        "agent.state.name: a string that is not UTF-8 text cannot be saved",
        "agent.state.people[1].name: a string that is not UTF-8 text cannot be saved",
    ];
    for (i, want) in wants.iter().enumerate() {
        h.host.dispatch(events(i as u64 + 1, 1));
        let e = error_of(&mut h.out, "keeper").await;
        assert!(e.contains(want), "case {}: {e}", i + 1);
    }
}

#[tokio::test]
async fn a_length_that_changes_under_a_call_is_refused_and_deep_shared_tables_too() {
    let script = r#"
      agent.on("audioVideoSession", function(e)
        if e.seq == 1 then
          -- 1 when charged, 300 million when the C loop asks again.
          local n = 0
          local t = setmetatable({}, {__len = function() n = n + 1 if n == 1 then return 1 end return 3e8 end, __metatable = false})
          table.insert(t, 1, "x")
        else
          -- A table 95 levels deep, met first near the top, then again 60 levels down.
          local x = {} local cur = x for i = 1, 95 do cur.next = {} cur = cur.next end
          local chain = x for i = 1, 60 do chain = {down = chain} end
          agent.state.tree = {x, chain}
        end
      end)
    "#;
    let mut h = host(Limits::default(), &[("sneaky.lua", script)]).await;
    h.host.dispatch(events(1, 1));
    let e = error_of(&mut h.out, "sneaky").await;
    assert!(e.contains("table.insert: a position in a table with a __len metamethod is not supported"), "{e}");
    h.host.dispatch(events(2, 1));
    let e = error_of(&mut h.out, "sneaky").await;
    assert!(e.contains("nested deeper than 100 levels"), "{e}");
}

/// The agent's resident memory (VmRSS), in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_timers_count_against_the_memory_limit_and_past_it_are_an_error_naming_it() {
    use common::*;
    let sim = start_sim(sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    // Three scripts make timers until they cannot (X2 of the 2026-12-04 report: 900k each held
    // ~50 MB apiece outside a 32 MiB limit).
    let maker = r#"
      agent.on("audioVideoSession", "added", function()
        local f = function() end
        local n = 0
        local ok, err = pcall(function() while true do agent.after(1e9, f); n = n + 1 end end)
        agent.log.info("made " .. n .. " timers: " .. tostring(err))
      end)
    "#;
    for name in ["t1.lua", "t2.lua", "t3.lua"] {
        write(dir.path(), name, maker);
    }
    let limit_mb = 16;
    let config = config_file(&sim, dir.path(), &format!("memory_limit_mb = {limit_mb}\nhandler_timeout_ms = 60000\ninstruction_limit = 100000000000\n"));
    let log = dir.path().join("agent.log");
    let agent =
        agent_command(&["run", "--config", config.to_str().unwrap()], &[("RUST_LOG", "info")]).stderr(std::fs::File::create(&log).unwrap()).spawn_guarded();
    wait_available(&sim).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_of(agent.id());
    let _call = sim.start_call(answered_call()).unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("each script's report", || lines().matches("made ").count() == 3).await;
    let text = lines();
    for line in text.lines().filter(|l| l.contains("made ")) {
        assert!(line.contains("memory limit exceeded (scripts.memory_limit_mb = 16 MiB) by pending timers"), "{line}");
    }
    let grown = rss_of(agent.id()).saturating_sub(before);
    eprintln!("RSS grew {} KiB; {}", grown >> 10, text.lines().filter(|l| l.contains("made ")).collect::<Vec<_>>().join("\n"));
    // The three Lua states and their timers within 3 × 16 MiB, with room for the allocator.
    assert!(grown < (3 * limit_mb + 24) << 20, "RSS grew {} MiB with 3 scripts at a {limit_mb} MiB limit:\n{text}", grown >> 20);
}

/// A request body is serialized as `agent.json.encode` serializes: an API area the script has not
/// used yet (its table still empty) fails as it does once installed, before anything is sent.
#[tokio::test]
async fn a_request_body_holding_an_area_not_yet_installed_fails_as_it_does_once_installed() {
    let script = r#"
      local function try()
        local ok, err = pcall(agent.http.request, { method = "POST", url = "http://127.0.0.1:9/", body = { calls = agent.calls } })
        return tostring(ok) .. " " .. tostring(err):match("^[^\n]*")
      end
      agent.on("audioVideoSession", function(e)
        local before = try()
        local _ = agent.calls.answer
        agent.log.info(before .. " || " .. try())
      end)
    "#;
    let mut h = host(Limits::default(), &[("body.lua", script)]).await;
    h.host.dispatch(events(1, 1));
    let line = log_of(&mut h.out, "body").await;
    let (before, after) = line.split_once(" || ").unwrap();
    assert_eq!(before, after, "{line}");
    assert!(before.starts_with("false ") && before.contains("cannot serialize <function>"), "{line}");
}
