//! Traces: for every (event, script), what the script's subscriptions made of the event and
//! what each handler call did, in order (issue 23). Timer runs and `on_unload` runs get one
//! too.
//!
//! Cheap when nobody reads them: a call collects small structured records (`Step`) in the
//! script's Lua state (app data `Recording`) as the `agent.*` functions run; the runner gathers
//! them into a `Trace` per (event, script), and serialises each trace once, at the commit that
//! writes the script's cursor, in the same transaction (`Store::commit_script_with`). An event
//! that no subscription of the script looks at (no rel matched) leaves no trace.
//!
//! Bounds: a trace keeps at most `TRACE_MAX_BYTES` of steps (the rest are counted in
//! `dropped_steps`); the database keeps the last `scripts.traces_per_script` traces of each
//! script and at most `TRACES_MAX_BYTES` of them (`Store`).

use mlua::Lua;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Instant;

/// A text that is most often one of a few constants (no allocation for those).
pub type Text = Cow<'static, str>;

/// The most bytes of steps one trace keeps (log text, paths, messages): 16 KiB.
pub const TRACE_MAX_BYTES: usize = 16 << 10;

/// One thing a call did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// `agent.log.*` or `print` (redacted as in the log).
    Log { at_us: u64, level: Text, message: String },
    /// `agent.ucwa.*` (and `agent.calls`/`agent.me`/`agent.im`, which go through it): the
    /// href; `agent.http.request`: the host only (webhook URLs carry secrets).
    Request {
        at_us: u64,
        via: Text,
        method: String,
        target: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        error: Option<String>,
        us: u64,
    },
    /// `agent.after`/`agent.every` (`set`), `:cancel()` (`cancel`).
    Timer {
        at_us: u64,
        op: Text,
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        ms: Option<i64>,
        #[serde(skip_serializing_if = "std::ops::Not::not", default)]
        every: bool,
    },
    /// `agent.metrics.*`: a metric changed (`inc`, `dec`, `set`, `observe`).
    Metric { at_us: u64, name: String, op: Text, value: f64 },
}

impl Step {
    fn bytes(&self) -> usize {
        32 + match self {
            Step::Log { message, .. } => message.len(),
            Step::Request { target, error, .. } => target.len() + error.as_ref().map_or(0, String::len),
            Step::Timer { .. } => 0,
            Step::Metric { name, .. } => name.len(),
        }
    }
}

/// What the current call did so far (the script's Lua state's app data, as a `Recorder`).
/// Off outside calls and when traces are off: `record` then costs one check.
#[derive(Default)]
pub(crate) struct Recording {
    on: bool,
    started: Option<Instant>,
    steps: Vec<Step>,
    bytes: usize,
    dropped: u32,
    /// Bytes the trace had before this call (its earlier calls).
    budget: usize,
}

/// A state's `Recording`, shared: a run of events dispatched in one entry into Lua
/// (`script::dispatch`) starts and ends each call's recording between two handlers.
pub(crate) type Recorder = std::sync::Arc<std::sync::Mutex<Recording>>;

impl Recording {
    /// The microseconds since the call started.
    pub(crate) fn at_us(&self) -> u64 {
        self.started.map_or(0, |s| s.elapsed().as_micros() as u64)
    }
}

/// Installs the state's recorder (off).
pub(crate) fn install(lua: &Lua) {
    lua.set_app_data::<Recorder>(Default::default());
}

/// The state's recorder.
pub(crate) fn recorder(lua: &Lua) -> Option<Recorder> {
    lua.app_data_ref::<Recorder>().map(|r| r.clone())
}

fn lock(r: &Recorder) -> std::sync::MutexGuard<'_, Recording> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes a step of the current call, if one is being traced (`step` is built only then).
pub(crate) fn record(lua: &Lua, step: impl FnOnce(u64) -> Step) {
    let Some(rec) = lua.app_data_ref::<Recorder>() else {
        return;
    };
    let mut r = lock(&rec);
    if !r.on {
        return;
    }
    let s = step(r.at_us());
    let b = s.bytes();
    if r.budget + r.bytes + b > TRACE_MAX_BYTES {
        r.dropped += 1;
        return;
    }
    r.bytes += b;
    r.steps.push(s);
}

/// Whether the current call is traced (to skip work a trace alone needs).
pub(crate) fn recording(lua: &Lua) -> bool {
    lua.app_data_ref::<Recorder>().is_some_and(|r| lock(&r).on)
}

/// Starts recording a call; `used`: the bytes the trace already holds.
pub(crate) fn begin(lua: &Lua, started: Instant, used: usize) {
    if let Some(r) = lua.app_data_ref::<Recorder>() {
        begin_on(&r, started, used);
    }
}

/// `begin`, on the recorder itself.
pub(crate) fn begin_on(rec: &Recorder, started: Instant, used: usize) {
    let mut r = lock(rec);
    r.on = true;
    r.started = Some(started);
    r.steps.clear();
    r.bytes = 0;
    r.dropped = 0;
    r.budget = used;
}

/// Stops recording: the call's steps, their bytes, and how many did not fit.
pub(crate) fn end(lua: &Lua) -> (Vec<Step>, usize, u32) {
    match lua.app_data_ref::<Recorder>() {
        Some(r) => end_on(&r),
        None => (Vec::new(), 0, 0),
    }
}

/// `end`, on the recorder itself.
pub(crate) fn end_on(rec: &Recorder) -> (Vec<Step>, usize, u32) {
    let mut r = lock(rec);
    r.on = false;
    r.started = None;
    (std::mem::take(&mut r.steps), std::mem::take(&mut r.bytes), std::mem::take(&mut r.dropped))
}

/// The event a trace is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TracedEvent {
    pub seq: u64,
    pub rel: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub href: String,
}

/// One subscription of the script and what it made of the event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubMatch {
    pub rel: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    /// The line of its `agent.on`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<usize>,
    /// `yes`, `no`, or `rel only` (the rel matched, the type did not).
    pub matched: Text,
}

/// A subscription as a trace names it: what it matches and the line of its `agent.on`. It
/// holds nothing of the Lua state (not the handler), so a run's trace can wait in the script's
/// `Watch` for another thread to write it.
#[derive(Debug, Clone)]
pub(crate) struct Subscribed {
    pub rel: String,
    pub kind: Option<String>,
    pub line: Option<usize>,
}

impl Subscribed {
    /// What it made of an event: `yes`, `rel only` (the rel matched, the type did not) or `no`.
    /// (The rule of `ctx::Sub::matches`, which runs the handlers, spelled out again here: this
    /// file is below `ctx` and must not import it.)
    pub(crate) fn made_of(&self, rel: &str, kind: &str) -> SubMatch {
        let rel_matched = self.rel == "*" || self.rel == rel;
        let matched = match (rel_matched, self.kind.as_deref().is_none_or(|k| k == kind)) {
            (true, true) => "yes",
            (true, false) => "rel only",
            (false, _) => "no",
        };
        SubMatch { rel: self.rel.clone(), kind: self.kind.clone(), line: self.line, matched: matched.into() }
    }
}

/// One call into the script.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Call {
    /// `handler`, `timer` or `on_unload`.
    pub what: Text,
    /// The subscription it ran for (its index in `subscriptions`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sub: Option<usize>,
    /// Milliseconds since the Unix epoch.
    pub start_ms: i64,
    pub us: u64,
    /// `ok`, `error` or `limit` (a limit of `[scripts]` stopped it); a call that never returned
    /// is a trace of its own with `stuck`.
    pub outcome: Text,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Where the error was raised: `file.lua:line`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at: Option<String>,
    pub steps: Vec<Step>,
    /// When it started, until `start_ms` is made from it (at the commit: no clock read per call).
    #[serde(skip)]
    pub(crate) started: Option<Instant>,
}

/// Milliseconds since the epoch of instants of this process, from one reading of both clocks.
pub(crate) struct WallClock(i64, Instant);

impl WallClock {
    pub(crate) fn now() -> WallClock {
        WallClock(crate::script::Clock::System.now_ms(), Instant::now())
    }

    pub(crate) fn ms(&self, at: Instant) -> i64 {
        self.0 - self.1.saturating_duration_since(at).as_millis() as i64
    }
}

/// A call as the runner got it back: with the bytes its steps hold and how many were left out.
pub(crate) struct Run {
    pub call: Call,
    pub bytes: usize,
    pub dropped: u32,
}

/// What a commit wrote of `agent.state`: on the last trace of the commit, which may be shared
/// by several (`traces`: how many runs were committed together).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateWritten {
    pub set: Vec<String>,
    pub removed: Vec<String>,
    pub traces: usize,
}

/// One (event, script) — or timer run, `on_unload` run, stuck call, skipped event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    pub account: String,
    pub script: String,
    pub version: u64,
    /// `event`, `timer`, `on_unload`, `stuck`.
    pub kind: Text,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event: Option<TracedEvent>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub subscriptions: Vec<SubMatch>,
    /// Why no handler ran: `paused`, `not loaded: …`, `stuck: …`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub calls: Vec<Call>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state: Option<StateWritten>,
    /// Steps left out by the trace's byte bound.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub dropped_steps: u32,
    /// The bytes of steps held (for the bound; not stored).
    #[serde(skip)]
    pub bytes: usize,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TracedEvent {
    pub fn of(ev: &crate::ucwa::Event) -> TracedEvent {
        TracedEvent { seq: ev.seq, rel: ev.rel().to_string(), kind: ev.kind().to_string(), href: ev.href().to_string() }
    }
}

/// Traces' JSON, each with its event's seq (for whoever listens).
pub(crate) type Live = Vec<(u64, std::sync::Arc<str>)>;

/// Traces serialised for the database (JSON, one per line): the last `keep`
/// (`scripts.traces_per_script`) of them; and, with `each`, every one's JSON with its event's
/// seq (for whoever listens).
pub(crate) fn chunk(traces: impl IntoIterator<Item = Trace>, keep: usize, each: bool) -> (crate::store::TraceChunk, Live) {
    let traces: Vec<Trace> = traces.into_iter().collect();
    let stored_from = traces.len().saturating_sub(keep);
    let mut chunk = crate::store::TraceChunk { keep, ..Default::default() };
    let mut jsons = Vec::new();
    for (i, t) in traces.iter().enumerate() {
        let stored = i >= stored_from;
        if !stored && !each {
            continue;
        }
        let Ok(json) = serde_json::to_string(t) else { continue };
        if stored {
            let seq = t.seq();
            if chunk.n == 0 {
                chunk.at_ms = t.at_ms;
            }
            if seq != 0 {
                chunk.first_seq = if chunk.first_seq == 0 { seq } else { chunk.first_seq.min(seq) };
                chunk.last_seq = chunk.last_seq.max(seq);
            }
            chunk.lines.push_str(&json);
            chunk.lines.push('\n');
            chunk.n += 1;
        }
        if each {
            jsons.push((t.seq(), std::sync::Arc::from(json)));
        }
    }
    (chunk, jsons)
}

impl Trace {
    /// A trace with nothing in it yet.
    pub fn new(account: &str, script: &str, version: u64, kind: &'static str, at_ms: i64) -> Trace {
        Trace {
            account: account.to_string(),
            script: script.to_string(),
            version,
            kind: Cow::Borrowed(kind),
            at_ms,
            event: None,
            subscriptions: Vec::new(),
            skipped: None,
            calls: Vec::new(),
            state: None,
            dropped_steps: 0,
            bytes: 0,
        }
    }

    /// Adds a call's record.
    pub(crate) fn add(&mut self, r: Run) {
        self.bytes += r.bytes;
        self.dropped_steps += r.dropped;
        self.calls.push(r.call);
    }

    pub fn seq(&self) -> u64 {
        self.event.as_ref().map_or(0, |e| e.seq)
    }
}

/// A trace as a readable timeline (the `trace` command).
pub fn render(t: &Trace, with_account: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let when = crate::date::iso_utc(t.at_ms);
    let account = if with_account { format!(" [{}]", t.account) } else { String::new() };
    match &t.event {
        Some(e) => {
            let _ = writeln!(s, "{when}{account} {} v{}  event #{} {} {}  {}", t.script, t.version, e.seq, e.rel, e.kind, e.href);
        }
        None => {
            let _ = writeln!(s, "{when}{account} {} v{}  {}", t.script, t.version, t.kind);
        }
    }
    for (i, sub) in t.subscriptions.iter().enumerate() {
        let what = match &*sub.matched {
            "yes" => "matched",
            "rel only" => "rel matched, type did not",
            _ => "no match",
        };
        let line = sub.line.map(|l| format!(" (line {l})")).unwrap_or_default();
        let _ = writeln!(s, "  sub {}: agent.on({:?}{}){line}: {what}", i + 1, sub.rel, sub.kind.as_ref().map(|k| format!(", {k:?}")).unwrap_or_default());
    }
    if let Some(why) = &t.skipped {
        let _ = writeln!(s, "  skipped: {why}");
    }
    for c in &t.calls {
        let which = c.sub.map(|i| format!(" (sub {})", i + 1)).unwrap_or_default();
        let _ = writeln!(s, "  {}{which} at {}  {:.3} ms  {}", c.what, crate::date::iso_utc(c.start_ms), c.us as f64 / 1000.0, c.outcome);
        for st in &c.steps {
            let line = match st {
                Step::Log { at_us, level, message } => format!("+{:.3} ms  log {level}: {message}", *at_us as f64 / 1000.0),
                Step::Request { at_us, via, method, target, status, error, us } => {
                    let result = match (status, error) {
                        (Some(code), _) => code.to_string(),
                        (None, Some(e)) => format!("failed: {e}"),
                        (None, None) => "?".into(),
                    };
                    let via = if via == "http" { "agent.http.request" } else { "agent.ucwa" };
                    format!("+{:.3} ms  {via} {method} {target} → {result} ({:.3} ms)", *at_us as f64 / 1000.0, *us as f64 / 1000.0)
                }
                Step::Timer { at_us, op, id, ms, every } => {
                    let kind = if *every { "every" } else { "after" };
                    match (&**op, ms) {
                        ("set", Some(ms)) => format!("+{:.3} ms  timer {id} set: agent.{kind}({ms})", *at_us as f64 / 1000.0),
                        _ => format!("+{:.3} ms  timer {id} {op}", *at_us as f64 / 1000.0),
                    }
                }
                Step::Metric { at_us, name, op, value } => format!("+{:.3} ms  metric {name}:{op}({value})", *at_us as f64 / 1000.0),
            };
            let _ = writeln!(s, "    {line}");
        }
        if let Some(e) = &c.error {
            let at = c.at.as_ref().map(|a| format!(" at {a}")).unwrap_or_default();
            let first = e.lines().next().unwrap_or("");
            // (`file.lua:3: message`: the place is said once.)
            let first = c.at.as_ref().and_then(|a| first.strip_prefix(a.as_str())).and_then(|r| r.strip_prefix(": ")).unwrap_or(first);
            let _ = writeln!(s, "    error{at}: {first}");
        }
    }
    if t.dropped_steps > 0 {
        let _ = writeln!(s, "  ({} more steps not kept: over {TRACE_MAX_BYTES} bytes)", t.dropped_steps);
    }
    if let Some(w) = &t.state {
        let shared = if w.traces > 1 { format!(" (committed with the {} runs before it)", w.traces - 1) } else { String::new() };
        let mut what = Vec::new();
        if !w.set.is_empty() {
            what.push(format!("set {}", w.set.join(", ")));
        }
        if !w.removed.is_empty() {
            what.push(format!("removed {}", w.removed.join(", ")));
        }
        let _ = writeln!(s, "  agent.state written{shared}: {}", what.join("; "));
    }
    s
}
