//! `ucwa-agent test [DIR]`: runs `*_test.lua` files. Each file gets its own sandboxed state
//! with the `agent` API (offline: nothing is sent, the clock is manual) and a `test` table:
//!
//! ```lua
//! test.load("missed_calls.lua")                 -- the script under test, beside the test file
//! test.case("logs a missed call", function()
//!   local e = test.event("audioVideoInvitation", "completed",
//!     {status = "Failure", reason = {subcode = "Missed"}, resource = {direction = "Incoming"}})
//!   test.dispatch(e)                              -- runs the matching handlers; raises on error
//!   local logs = test.logs()                      -- log lines since the case began or the last call
//!   test.eq(logs[1].message, "missed call")
//!   test.answer("GET", e.href, 200, {state = "Connected"})   -- a canned agent.ucwa answer
//!   test.advance(60000)                           -- the clock, and timers that fall due
//!   test.clock(1774746000000)                     -- the clock set to an epoch time
//!   test.calendar("holidays", "holidays.ics")     -- as [scripts.calendars] would give it
//!   test.eq(#test.requests(), 0)                  -- requests since the case began or the last call
//! end)
//! ```
//!
//! Output is TAP; the run fails when any case or file fails.

use super::offline_env;
use crate::script::manual;
use crate::script::offline::{Canned, OfflineNet};
use crate::script::{Net, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use crate::ucwa::{batch, Event, Origin};
use mlua::{chunk::ChunkMode, Lua, LuaSerdeExt, Table, Value};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Hrefs of test events are on this origin.
pub const TEST_ORIGIN: &str = "https://pool.test.invalid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    /// `None` when it passed; otherwise why it failed.
    pub failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FileResult {
    pub file: PathBuf,
    pub cases: Vec<CaseResult>,
    /// The file itself failed (syntax error, error outside a case).
    pub error: Option<String>,
}

/// A file's bytes; anything else is refused, saying what it is instead of a `what`. (A FIFO
/// would block the read until someone writes to it.)
fn read_file(path: &Path, what: &str) -> std::io::Result<Vec<u8>> {
    let m = std::fs::metadata(path)?;
    if m.is_file() {
        std::fs::read(path)
    } else if m.is_dir() {
        Err(std::io::Error::other(format!("a directory, not a {what}")))
    } else {
        Err(std::io::Error::other(format!("not a regular file (a FIFO, socket or device), not a {what}")))
    }
}

/// `*_test.lua` files in `dir`, sorted.
pub fn find_tests(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("_test.lua") && !n.starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

/// What one test file's state shares with the Rust side.
struct Harness {
    env: Arc<ScriptEnv>,
    net: Arc<OfflineNet>,
    dir: PathBuf,
    logs: Mutex<broadcast::Receiver<ScriptOutput>>,
    events: Mutex<HashMap<u64, Arc<Event>>>,
    seq: Mutex<u64>,
    cases: Arc<Mutex<Cases>>,
}

/// The cases of a file: those done, and the one running (what a file stuck in a call was at).
#[derive(Default)]
struct Cases {
    done: Vec<CaseResult>,
    running: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one test file on a thread of its own (Lua never runs on the caller's thread). A handler
/// or timer stuck in code the limits cannot interrupt is declared stuck by the watchdog at its
/// limit, as in `run`: its case fails, saying so, and the rest of the file does not run (its
/// thread is left behind). Anything else still running after `limit` fails the same way.
pub fn run_file_bounded(file: &Path, settings: ScriptSettings, limit: Duration) -> FileResult {
    let cases = Arc::new(Mutex::new(Cases::default()));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (path, shared) = (file.to_path_buf(), cases.clone());
    let spawned = std::thread::Builder::new().name(format!("lua-test:{}", file.display())).stack_size(manual::THREAD_STACK).spawn(move || {
        let result = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt.block_on(run_file_sharing(&path, settings, shared, Some(out_tx))),
            Err(e) => FileResult { file: path.clone(), cases: Vec::new(), error: Some(format!("cannot start a runtime: {e}")) },
        };
        let _ = done_tx.send(result);
    });
    let given_up = |why: String| {
        let mut c = lock(&cases);
        let mut result = FileResult { file: file.to_path_buf(), cases: std::mem::take(&mut c.done), error: None };
        match c.running.take() {
            Some(name) => {
                result.cases.push(CaseResult { name, failure: Some(why) });
                result.error = Some("the file's other cases did not run: its state is still in the call".into());
            }
            None => result.error = Some(why),
        }
        result
    };
    if let Err(e) = spawned {
        return FileResult { file: file.to_path_buf(), cases: Vec::new(), error: Some(format!("cannot start a thread: {e}")) };
    }
    let deadline = Instant::now() + limit;
    let mut output: Option<broadcast::Receiver<ScriptOutput>> = None;
    loop {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => return result,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return given_up("the test's thread ended without a result (a panic)".into()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if output.is_none() {
            output = out_rx.try_recv().ok();
        }
        while let Some(Ok(o)) = output.as_mut().map(|rx| rx.try_recv()) {
            if let ScriptOutput::Stuck { doing, limit_ms, .. } = o {
                return given_up(format!(
                    "stuck: {doing} ran past its {limit_ms} ms limit and did not return (code the limits cannot interrupt); run would stop feeding the script too"
                ));
            }
        }
        if Instant::now() > deadline {
            return given_up(format!("did not finish within {} s: stuck in code the limits cannot interrupt", limit.as_secs()));
        }
    }
}

/// Runs one test file.
pub async fn run_file(file: &Path, settings: ScriptSettings) -> FileResult {
    run_file_sharing(file, settings, Arc::default(), None).await
}

/// `run_file`, its cases noted in `cases` as they run, its output stream handed to `output`.
async fn run_file_sharing(
    file: &Path,
    settings: ScriptSettings,
    cases: Arc<Mutex<Cases>>,
    output: Option<std::sync::mpsc::Sender<broadcast::Receiver<ScriptOutput>>>,
) -> FileResult {
    let mut result = FileResult { file: file.to_path_buf(), cases: Vec::new(), error: None };
    // `test scripts/front_desk.lua`: the script, where its test was meant.
    let test_file = test_of(file);
    if let Some(test) = test_file.as_ref().filter(|t| t.is_file()) {
        result.error = Some(format!("this is a script, not a test; its test is {0}: ucwa-agent test {0}", test.display()));
        return result;
    }
    // (A GET that no `test.answer` and no dispatched event answers says so.)
    let at = super::Offline {
        origin: TEST_ORIGIN,
        application: super::OFFLINE_APPLICATION,
        missing: "No test.answer for this href, and no event dispatched so far embedded it.",
    };
    let mut env = offline_env(settings, false, false, at);
    env.secret_placeholders = true;
    let Net::Offline(net) = env.net.clone() else { unreachable!("offline_env is offline") };
    let source = match read_file(file, "test file") {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(format!("{}: {e}", file.display()));
            return result;
        }
    };
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    // The test file's state is a version of the script under test, on the host and runner
    // `run` uses: its handlers, timers and commits go through the same calls.
    let host = ScriptHost::with_env(dir.clone(), env);
    let env = host.env().clone();
    if let Some(tx) = output {
        let _ = tx.send(env.subscribe_output());
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("test");
    let name = stem.strip_suffix("_test").unwrap_or(stem).to_string();
    let harness = Arc::new(Harness {
        logs: Mutex::new(env.subscribe_output()),
        env: env.clone(),
        net,
        dir: dir.clone(),
        events: Mutex::default(),
        seq: Mutex::new(0),
        cases: cases.clone(),
    });
    let lua = match host.drive(&name, dir).map_err(mlua::Error::runtime).and_then(|lua| test_table(&lua, &harness).map(|()| lua)) {
        Ok(l) => l,
        Err(e) => {
            result.error = Some(format!("cannot set up the test state: {e}"));
            return result;
        }
    };
    let chunk = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    manual::rearm(&lua);
    let run = lua.load(&source[..]).set_name(format!("@{chunk}")).set_mode(ChunkMode::Text).into_function();
    let run = run.and_then(|f| crate::script::tbc::refuse(&f).map(|()| f));
    if let Err(e) = match run {
        Ok(f) => f.call_async::<()>(()).await,
        Err(e) => Err(e),
    } {
        result.error = Some(user_frames(&manual::describe(&e)));
    }
    result.cases = std::mem::take(&mut lock(&cases).done);
    if result.cases.is_empty() && result.error.is_none() {
        result.error = Some(match &test_file {
            Some(test) => format!(
                "no test.case in this file: is it a script? A script's test is a file beside it, {}, that calls test.load(\"{}\") and test.case(name, function)",
                test.display(),
                file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            None => "no test.case in this file".into(),
        });
    }
    result
}

/// A failure as its message and the tracebacks' frames in the test's and the script's files:
/// the agent's own (`agent-actions`, the handler caller `event`), mlua's (`__mlua_async_poll`) and Rust's (`[C]`) are left out.
fn user_frames(description: &str) -> String {
    let mut lines = description.lines();
    let mut out: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "stack traceback:").collect();
    let frames: Vec<&str> = lines
        .filter(|l| {
            let t = l.trim();
            t != "stack traceback:"
                && !t.starts_with("[C]")
                && !t.starts_with("agent-actions:")
                && !t.starts_with("event:")
                && !t.contains("__mlua")
                && !t.starts_with("=test")
        })
        .collect();
    if !frames.is_empty() {
        out.push("stack traceback:");
        out.extend(frames);
    }
    out.join("\n")
}

/// `scripts/front_desk_test.lua` for `scripts/front_desk.lua`; None for a `*_test.lua` file.
fn test_of(file: &Path) -> Option<PathBuf> {
    let name = file.file_name()?.to_str()?;
    let stem = name.strip_suffix(".lua")?;
    (!stem.ends_with("_test")).then(|| file.with_file_name(format!("{stem}_test.lua")))
}

/// The `test` table, in the test file's state.
fn test_table(lua: &Lua, h: &Arc<Harness>) -> mlua::Result<()> {
    let t = lua.create_table()?;
    let hh = h.clone();
    t.set(
        "load",
        lua.create_function(move |lua, path: String| {
            let full = hh.dir.join(&path);
            let src = read_file(&full, "script").map_err(|e| mlua::Error::runtime(format!("test.load({path}): {e}")))?;
            let chunk = full.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or(path);
            let f = lua.load(&src[..]).set_name(format!("@{chunk}")).set_mode(ChunkMode::Text).into_function()?;
            crate::script::tbc::refuse(&f)?;
            f.call::<()>(())
        })?,
    )?;
    let hh = h.clone();
    t.set("event", lua.create_function(move |lua, (rel, kind, fields): (String, String, Option<Table>)| event(lua, &hh, &rel, &kind, fields))?)?;
    let hh = h.clone();
    t.set(
        "dispatch",
        lua.create_async_function(move |lua, ev: Table| {
            let hh = hh.clone();
            async move {
                let seq: u64 = ev.get("seq")?;
                let event = lock(&hh.events).get(&seq).cloned();
                let event = event.ok_or_else(|| mlua::Error::runtime("test.dispatch: pass an event made by test.event"))?;
                hh.net.learn(event.href(), event.resource(), event.kind() == "deleted");
                manual::dispatch(&lua, (*event).clone()).await
            }
        })?,
    )?;
    let hh = h.clone();
    t.set(
        "advance",
        lua.create_async_function(move |lua, ms: i64| {
            let hh = hh.clone();
            async move { manual::advance(&lua, &hh.env.clock, ms).await }
        })?,
    )?;
    // `test.clock(ms)`: the clock set to an epoch time (no timer runs; schedules re-arm from it).
    let hh = h.clone();
    t.set(
        "clock",
        lua.create_function(move |lua, ms: f64| {
            if !ms.is_finite() {
                return Err(mlua::Error::runtime("test.clock(ms): ms must be a number of milliseconds since the epoch"));
            }
            manual::set_clock(lua, &hh.env.clock, ms.floor() as i64)
        })?,
    )?;
    // `test.calendar(name, path)`: a holiday calendar as `[scripts.calendars]` would give it.
    let hh = h.clone();
    t.set(
        "calendar",
        lua.create_function(move |_, (name, path): (String, String)| {
            let calendar =
                crate::script::Calendar::read(&hh.dir.join(&path)).map_err(|e| mlua::Error::runtime(format!("test.calendar({name:?}, {path:?}): {e}")))?;
            let mut settings = (*hh.env.settings()).clone();
            settings.calendars.insert(name, Arc::new(calendar));
            hh.env.set_settings(settings);
            Ok(())
        })?,
    )?;
    // `agent.config` as `[scripts.config.<name>]` would give it, for the scripts loaded after.
    t.set(
        "config",
        lua.create_function(|lua, config: mlua::Table| {
            let agent: mlua::Table = lua.globals().get("agent")?;
            agent.set("config", config)
        })?,
    )?;
    let hh = h.clone();
    t.set(
        "answer",
        lua.create_function(move |lua, (method, target, status, body): (String, String, u16, Value)| {
            let body: serde_json::Value = lua.from_value(body)?;
            hh.net.can(&method, &target, Canned { status, body });
            Ok(())
        })?,
    )?;
    let hh = h.clone();
    t.set(
        "requests",
        lua.create_function(move |lua, ()| {
            let list = lua.create_table()?;
            for (i, r) in hh.net.take_requests().into_iter().enumerate() {
                let t = lua.create_table()?;
                t.set("via", r.via)?;
                t.set("method", r.method)?;
                t.set("url", r.url)?;
                if let Some(b) = r.body {
                    let decoded = serde_json::from_str::<serde_json::Value>(&b).ok();
                    match decoded {
                        Some(v) => t.set("body", lua.to_value(&v)?)?,
                        None => t.set("body", b)?,
                    }
                }
                list.set(i + 1, t)?;
            }
            Ok(list)
        })?,
    )?;
    let hh = h.clone();
    t.set(
        "logs",
        lua.create_function(move |lua, ()| {
            let list = lua.create_table()?;
            let mut rx = hh.logs.lock().unwrap_or_else(|p| p.into_inner());
            let mut n = 0;
            while let Ok(o) = rx.try_recv() {
                if let ScriptOutput::Log { level, message, fields, .. } = o {
                    n += 1;
                    let t = lua.create_table()?;
                    t.set("level", level)?;
                    t.set("message", message)?;
                    if let Some(f) = fields {
                        t.set("fields", lua.to_value(&f)?)?;
                    }
                    list.set(n, t)?;
                }
            }
            Ok(list)
        })?,
    )?;
    let hh = h.clone();
    t.set(
        "case",
        lua.create_async_function(move |lua, (name, f): (String, mlua::Function)| {
            let hh = hh.clone();
            async move {
                manual::rearm(&lua);
                lock(&hh.cases).running = Some(name.clone());
                // Each case starts with no log lines and no requests: test.logs() and
                // test.requests() give only its own.
                {
                    let mut logs = hh.logs.lock().unwrap_or_else(|p| p.into_inner());
                    while !matches!(logs.try_recv(), Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)) {}
                }
                hh.net.take_requests();
                let failure = f.call_async::<()>(()).await.err().map(|e| user_frames(&manual::describe(&e)));
                let mut cases = lock(&hh.cases);
                cases.running = None;
                cases.done.push(CaseResult { name, failure });
                Ok(())
            }
        })?,
    )?;
    t.set(
        "same",
        lua.create_function(|lua, (a, b): (Value, Value)| {
            // Strings compare as bytes when one is not UTF-8 (Latin-1 text): it is no JSON value.
            if let (Value::String(x), Value::String(y)) = (&a, &b) {
                if x.to_str().is_err() || y.to_str().is_err() {
                    // Shown as Lua writes it: bytes that are not UTF-8 as `\xNN`.
                    let shown = |s: &mlua::LuaString| {
                        let mut text = String::from("\"");
                        for chunk in s.as_bytes().utf8_chunks() {
                            text.push_str(chunk.valid());
                            chunk.invalid().iter().for_each(|b| text.push_str(&format!("\\x{b:02x}")));
                        }
                        text + "\""
                    };
                    return Ok((x.as_bytes() == y.as_bytes(), shown(x), shown(y)));
                }
            }
            let json = |v: Value| {
                lua.from_value(v).map(integral).map_err(|e| {
                    mlua::Error::runtime(format!(
                        "test.eq: {e} (a table holding a string that is not UTF-8 text compares only as that string: test.eq(s, \"caf\\xe9\"))"
                    ))
                })
            };
            let (a, b) = (json(a)?, json(b)?);
            Ok((a == b, a.to_string(), b.to_string()))
        })?,
    )?;
    lua.globals().set("test", t)?;
    lua.load(ASSERTIONS).set_name("=test").exec()
}

/// Whole floats as integers, as Lua compares them (`90.0 == 90`).
fn integral(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => J::from(f as i64),
            _ => J::Number(n),
        },
        J::Array(a) => J::Array(a.into_iter().map(integral).collect()),
        J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

/// Assertions in Lua, so a failure points at the test's own line.
const ASSERTIONS: &str = r#"
function test.eq(actual, expected, msg)
  local same, a, e = test.same(actual, expected)
  if not same then error((msg and (msg .. ": ") or "") .. "expected " .. e .. ", got " .. a, 2) end
end
function test.ok(value, msg)
  if not value then error(msg or "expected a true value", 2) end
end
function test.fails(f, pattern, msg)
  local ok, err = pcall(f)
  if ok then error((msg and (msg .. ": ") or "") .. "expected an error", 2) end
  if pattern and not tostring(err):find(pattern) then
    error((msg and (msg .. ": ") or "") .. "error " .. tostring(err) .. " does not match " .. pattern, 2)
  end
end
"#;

/// The default href of a test event, by rel, inside conversation `c`.
fn default_href(rel: &str, c: &str) -> String {
    let app = super::OFFLINE_APPLICATION;
    let conv = format!("{app}/communication/conversations/{c}");
    match rel {
        "conversation" => conv,
        "audioVideo" => format!("{conv}/audioVideo"),
        "audioVideoSession" => format!("{conv}/audioVideo/audioVideoSession"),
        "audioVideoInvitation" => format!("{app}/communication/audioVideoInvitations/{c}"),
        "participant" | "localParticipant" => format!("{conv}/participants/{c}"),
        "me" => format!("{app}/me"),
        "communication" => format!("{app}/communication"),
        other => format!("{app}/{other}"),
    }
}

fn default_sender(rel: &str) -> &'static str {
    match rel {
        "audioVideo" | "participant" | "localParticipant" | "messaging" => "conversation",
        "me" | "presence" | "note" | "location" => "me",
        "agent" => "agent",
        _ => "communication",
    }
}

/// `test.event(rel, type, {href, title, resource, status, reason, sender, conversation})`.
fn event(lua: &Lua, h: &Harness, rel: &str, kind: &str, fields: Option<Table>) -> mlua::Result<Table> {
    let f = |k: &str| -> mlua::Result<Option<serde_json::Value>> {
        match &fields {
            Some(t) => match t.get::<Value>(k)? {
                Value::Nil => Ok(None),
                v => Ok(Some(lua.from_value(v)?)),
            },
            None => Ok(None),
        }
    };
    let conversation = match f("conversation")? {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => "1".to_string(),
    };
    let href = match f("href")? {
        Some(serde_json::Value::String(s)) => s,
        _ => default_href(rel, &conversation),
    };
    let sender = match f("sender")? {
        Some(serde_json::Value::String(s)) => s,
        _ => default_sender(rel).to_string(),
    };
    let sender_href = if sender == "conversation" { default_href("conversation", &conversation) } else { default_href(&sender, &conversation) };
    let mut link = serde_json::json!({"rel": rel, "href": href});
    if let Some(t) = f("title")? {
        link["title"] = t;
    }
    let mut e = serde_json::json!({"link": link, "type": kind});
    if let Some(r) = f("resource")? {
        e["_embedded"] = serde_json::json!({ rel: r });
    }
    for k in ["status", "reason"] {
        if let Some(v) = f(k)? {
            e[k] = v;
        }
    }
    let body = serde_json::json!({"_links": {"next": {"href": "/events?ack=2"}}, "sender": [{"rel": sender, "href": sender_href, "events": [e]}]});
    let origin = Origin::of(&url::Url::parse(TEST_ORIGIN).expect("a valid URL"));
    let mut ev = batch::parse(body.to_string().as_bytes(), &origin).map_err(mlua::Error::runtime)?.events.remove(0);
    let seq = {
        let mut s = h.seq.lock().unwrap_or_else(|p| p.into_inner());
        *s += 1;
        *s
    };
    ev.seq = seq;
    let ev = Arc::new(ev);
    h.events.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, ev.clone());
    manual::event_table(lua, &ev)
}

/// TAP text for the results, and (passed, failed) counts (a failed file counts as one failure).
pub fn tap(results: &[FileResult]) -> (String, usize, usize) {
    let mut out = String::from("TAP version 13\n");
    let (mut n, mut passed, mut failed) = (0, 0, 0);
    for r in results {
        let _ = writeln!(out, "# {}", r.file.display());
        for c in &r.cases {
            n += 1;
            match &c.failure {
                None => {
                    passed += 1;
                    let _ = writeln!(out, "ok {n} - {}", c.name);
                }
                Some(why) => {
                    failed += 1;
                    let _ = writeln!(out, "not ok {n} - {}", c.name);
                    for line in why.lines() {
                        let _ = writeln!(out, "#   {line}");
                    }
                }
            }
        }
        if let Some(e) = &r.error {
            n += 1;
            failed += 1;
            let _ = writeln!(out, "not ok {n} - {}", r.file.display());
            for line in e.lines() {
                let _ = writeln!(out, "#   {line}");
            }
        }
    }
    let _ = writeln!(out, "1..{n}");
    (out, passed, failed)
}
