//! The task that owns one script's Lua state: it takes the script's messages in order, so events
//! run one at a time and a reload swaps versions between two events. It also fires the
//! version's timers, and commits the script's progress (cursor) and `agent.state` to the
//! database after its handlers return.

use super::api_state;
use super::budget;
use super::ctx::{self, OnUnload};
use super::dispatch;
use super::env::{Clock, ScriptEnv, ScriptSettings};
use super::interop;
use super::loader::{describe, Loaded};
use super::output::ScriptOutput;
use super::pending::{made, OneRun, Pending, RunTraces};
use super::state::Saved;
use super::timers::Timers;
use super::trace::{self, Trace};
use super::watchdog::Watch;
use crate::store::{StateWrite, TraceChunk};
use crate::ucwa::Event;
use mlua::Function;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What a script's task is asked to do, in order.
pub(crate) enum Msg {
    /// Events in channel order (a batch: one message, one wake-up, for all of its events).
    Events(Arc<Vec<Event>>),
    /// A new version, already built and run to completion of its top level.
    Swap(Box<Loaded>),
    /// Answered once everything before it is done (`replay` waits on it between batches).
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// A paused script takes events again (the console, with the admin token).
    Resume,
    Stop,
}

/// How long finished events may wait for more before the cursor and `agent.state` are written
/// (together, in one transaction, so they always agree), idle or busy. A crash in that window
/// means the events of those last milliseconds run again on the state as it was before them.
/// (A commit per few dozen events cost more than a trivial handler at full speed.)
const CURSOR_FLUSH: std::time::Duration = std::time::Duration::from_millis(10);

/// How often a script that is still working through events writes its traces (its commits
/// between carry the cursor only). A commit serialises up to `traces_per_script` traces, and
/// in a burst nearly all of them are pruned by the next one: written with every 10 ms commit,
/// that was most of what traces cost (BENCHMARKS.md, "Instructions per event"). A commit that
/// writes `agent.state`, one with the script caught up, and every commit while someone
/// listens (`tap`) write them at once; a `kill -9` loses at most this much of them.
const TRACE_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// A script's progress and health.
struct Progress {
    env: Arc<ScriptEnv>,
    name: Arc<str>,
    /// The last event whose handlers have returned.
    done: u64,
    /// The last `done` written to the database.
    committed: u64,
    /// `agent.state` as last written, key by key.
    saved: Saved,
    /// Consecutive failed handler calls; at the limit the script pauses until its file changes.
    failures: u32,
    paused: bool,
    /// The last error logged and how often it repeated, so a failing handler does not flood the log.
    last_error: Option<(String, u64)>,
    /// When the cursor is to be written if nothing else writes it first.
    flush_at: Option<tokio::time::Instant>,
    /// The settings the current version was loaded with.
    settings: Arc<ScriptSettings>,
    /// `agent.state` as last reported (tracing only).
    traced_state: Option<String>,
    /// What this script's thread is doing, for the watchdog.
    watch: Arc<Watch>,
    /// The traces of the runs since the last commit (written with it): the last
    /// `traces_per_script` of them, or all while someone listens (`tap`).
    traces: std::collections::VecDeque<Pending>,
    /// How many runs were traced since the last commit (some may have been let go).
    traced_runs: usize,
    /// When traces were last written (`TRACE_FLUSH`).
    traces_written: Option<tokio::time::Instant>,
    /// The errors reported since the caller last took them (a driven version: `Driven`).
    errors: Option<Vec<String>>,
    /// Handler calls not yet added to the metrics (at the end of a batch, at a commit).
    tally: crate::metrics::HandlerTally,
    /// The subscriptions' functions as a Lua sequence for `dispatch`, with the snapshot they
    /// were made from (made again when the script subscribes or unsubscribes).
    handlers: Option<(Arc<Vec<ctx::Sub>>, mlua::Table)>,
    /// The subscriptions as traces name them, with the snapshot they were made from (made
    /// again when the script subscribes or unsubscribes).
    subscribed: Option<Described>,
}

/// A snapshot of the subscriptions, and the same as traces name them.
type Described = (Arc<Vec<ctx::Sub>>, Arc<Vec<trace::Subscribed>>);

/// Starts a script's task on the Lua workers (`pool`): its Lua state runs on one worker at a
/// time, one event at a time; while it waits (its inbox, a timer, a request) the worker runs
/// other scripts. Its network requests run on the agent's runtime (`ScriptEnv::io`). The
/// receiver completes when the task ends; `on_end` runs just before (the host counts the stuck
/// versions whose call has not returned).
pub(crate) fn spawn(
    current: Loaded,
    inbox: mpsc::UnboundedReceiver<Msg>,
    env: Arc<ScriptEnv>,
    cursor: u64,
    watch: Arc<Watch>,
    on_end: impl FnOnce() + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    use tracing::Instrument;
    let (done, ended) = tokio::sync::oneshot::channel();
    let span = env.span.clone();
    let task = run(current, inbox, env, cursor, watch.clone()).instrument(span);
    super::pool::spawn(watch, task, move || {
        on_end();
        let _ = done.send(());
    })?;
    Ok(ended)
}

async fn run(mut current: Loaded, mut inbox: mpsc::UnboundedReceiver<Msg>, env: Arc<ScriptEnv>, cursor: u64, watch: Arc<Watch>) {
    let name = current.ctx.name.clone();
    // The batch being worked through, and the index of its next event.
    let mut batch: Option<(Arc<Vec<Event>>, usize)> = None;
    let mut p = Progress::new(name, env, cursor, watch);
    // Due timers and queued events take turns, so a timer that is always due (its run takes
    // longer than its interval) cannot starve the events, nor the events the timers.
    let mut timers_turn = true;
    p.watch.set_running(current.ctx.version);
    loop {
        // (A script with work keeps its worker for a slice at most: the others get their turn.)
        super::pool::share().await;
        if p.watch.is_stuck() {
            // The watchdog gave up on this thread while it was in a call; the host has stopped
            // feeding it and a new version will start from the committed cursor. Leave
            // without writing anything (but the calls made are counted).
            p.env.metrics.handlers(&p.name, &mut p.tally);
            return;
        }
        let due = current.lua.app_data_ref::<Timers>().and_then(|t| t.next_due());
        let due_now = due.is_some_and(|d| d <= tokio::time::Instant::now());
        if batch.as_ref().is_some_and(|(events, next)| *next >= events.len()) {
            batch = None;
            p.env.metrics.handlers(&p.name, &mut p.tally);
        }
        // The inbox's turn comes between timer runs too: a timer that is always due must not
        // keep the script from ever reading its events.
        let mut msg = None;
        if due_now && !timers_turn && batch.is_none() {
            match inbox.try_recv() {
                Ok(m) => msg = Some(Some(m)),
                Err(mpsc::error::TryRecvError::Disconnected) => msg = Some(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        if msg.is_none() && due_now && (timers_turn || batch.is_none()) {
            timers_turn = false;
            fire_timers(&current, &mut p).await;
            continue;
        }
        if msg.is_none() {
            if let Some((events, next)) = &mut batch {
                timers_turn = true;
                if p.in_runs() {
                    // Until the slice, a due timer or the cursor's flush: they take their turn after the run.
                    let stop_at = [super::pool::slice_end(), due.map(|d| d.into_std()), p.flush_at.map(|f| f.into_std())].into_iter().flatten().min();
                    // (Boxed, as the call below: the state of a call into Lua lives in its own
                    // allocation while the call runs, not in every idle script's task.)
                    *next = Box::pin(dispatch(&current, events, *next, stop_at, &mut p)).await;
                    continue;
                }
                let i = *next;
                *next += 1;
                Box::pin(run_event(&current, events, i, &mut p)).await;
                continue;
            }
        }
        // Take what is queued without arming timers (a timer per event costs more than the
        // event); wait on the timers only when the inbox is empty.
        let msg = match msg {
            Some(m) => {
                timers_turn = true;
                m
            }
            None => match inbox.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    m = inbox.recv() => m,
                    // A manual clock (replay) only moves between events: its timers are checked above.
                    _ = sleep_until(due.filter(|_| matches!(p.env.clock, Clock::System))) => {
                        fire_timers(&current, &mut p).await;
                        continue;
                    }
                    _ = sleep_until(p.flush_at) => {
                        p.commit(&current);
                        continue;
                    }
                },
            },
        };
        match msg {
            Some(Msg::Events(events)) => batch = Some((events, 0)),
            Some(Msg::Swap(next)) => {
                p.handlers = None;
                p.subscribed = None;
                unload(&current, &mut p).await;
                if p.watch.is_stuck() {
                    return; // on_unload never returned in time: the host starts the new version
                }
                current = *next;
                p.watch.set_running(current.ctx.version);
                p.settings = p.env.settings();
                // The marks hold the old version's strings: the new version's first commit
                // writes its whole state.
                p.saved = Saved::default();
                // The new version was built before the old one's last commit: bring its
                // `agent.state` up to the state as committed now, key by key, in the same
                // table (its top level may hold it in a local), keeping keys only its top
                // level set.
                if let Err(error) = api_state::merge_committed_state(&current.lua, &current.ctx) {
                    tracing::error!(script = %p.name, %error, "agent.state: cannot bring the new version up to date");
                }
                p.failures = 0;
                if p.paused {
                    p.paused = false;
                    p.env.board.set_paused(&p.name, false);
                    tracing::info!(script = %p.name, version = current.ctx.version, "script resumed: its file changed");
                }
            }
            Some(Msg::Resume) => {
                p.failures = 0;
                if p.paused {
                    p.paused = false;
                    p.env.board.set_paused(&p.name, false);
                    tracing::info!(script = %p.name, version = current.ctx.version, "script resumed from the console");
                }
            }
            Some(Msg::Barrier(done)) => {
                let _ = done.send(());
            }
            Some(Msg::Stop) | None => {
                unload(&current, &mut p).await;
                break;
            }
        }
    }
}

/// The batch's events from `from` on through the script in one entry into Lua
/// (`script::dispatch`), entered again after each failed handler, until the batch ends, `stop_at`
/// passes (before an event), the script changes its subscriptions or timers, pauses or is
/// declared stuck; then its progress noted (and committed when due). Gives the index of the
/// next event to run. Each handler call keeps its own budget, time limit, watchdog note and
/// error report, as `call` gives them.
async fn dispatch(cur: &Loaded, batch: &Arc<Vec<Event>>, from: usize, stop_at: Option<Instant>, p: &mut Progress) -> usize {
    let parts = (|| {
        let func = interop::dispatcher(&cur.lua).ok()?;
        let subs = cur.subscriptions()?.snapshot();
        let budget = budget::budget(&cur.lua)?.clone();
        let now = cur.lua.app_data_ref::<ctx::CurrentEvent>()?.run.clone();
        Some((func, subs, budget, now))
    })();
    let Some((func, subs, budget, now)) = parts else {
        run_event(cur, batch, from, p).await; // (every state has them: not reached)
        return from + 1;
    };
    let handlers = match p.handlers.as_ref().filter(|(s, _)| Arc::ptr_eq(s, &subs)) {
        Some((_, t)) => t.clone(),
        None => match cur.lua.create_sequence_from(subs.iter().map(|s| s.func.clone())) {
            Ok(t) => {
                p.handlers = Some((subs.clone(), t.clone()));
                t
            }
            Err(_) => {
                run_event(cur, batch, from, p).await; // out of memory: the event's own call reports it
                return from + 1;
            }
        },
    };
    let limits = p.settings.limits;
    let tally = std::mem::take(&mut p.tally);
    let traced = p.tracing().then(|| trace::recorder(&cur.lua)).flatten().map(|rec| dispatch::Traced::new(rec, cur.ctx.version, batch.len() - from));
    // (Boxed: `step` reads it through a pointer while the call runs, so it must not move.)
    let ctl = Box::new(dispatch::Control::new(batch.clone(), from, subs.clone(), p.done, stop_at, budget.clone(), p.watch.clone(), limits, now, tally, traced));
    loop {
        // The few instructions before `step` arms the first handler's budget run on a fresh
        // one: after a limit, the spent one would stop them ("limit reached") before any handler.
        budget.arm(&limits);
        let arg = mlua::LightUserData(&*ctl as *const dispatch::Control as *mut std::ffi::c_void);
        let result = {
            let mut call = std::pin::pin!(futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(func.call_async::<()>((arg, &handlers)))));
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Ready(r) => Ok(r),
                // A handler awaits: its time limit runs from its own start (the run's calls
                // before it had theirs).
                std::task::Poll::Pending => loop {
                    let Some(since) = ctl.running() else {
                        break Ok(call.as_mut().await);
                    };
                    match tokio::time::timeout_at(tokio::time::Instant::from_std(since) + limits.handler_timeout, call.as_mut()).await {
                        Ok(r) => break Ok(r),
                        Err(_) if ctl.running() == Some(since) => break Err(()),
                        Err(_) => continue,
                    }
                },
            }
        };
        let result = result
            .map(|r| r.unwrap_or_else(|panic| Err(mlua::Error::runtime(format!("internal error of the agent (please report it): {}", panic_text(&*panic))))));
        if std::mem::take(&mut ctl.lock().succeeded) {
            p.failures = 0;
        }
        let timed_out = result.is_err();
        let error = match result {
            Ok(Ok(())) => break,
            Ok(Err(e)) => format!("handler: {}", describe(&e)).trim_start_matches("handler: ").to_string(),
            Err(()) => format!("time limit exceeded (scripts.handler_timeout_ms = {})", limits.handler_timeout.as_millis()),
        };
        p.watch.end();
        let failed = ctl.take_failed();
        let ev = failed.as_ref().map(|f| &batch[f.event]);
        let limit = timed_out || budget.exhausted();
        {
            let mut r = ctl.lock();
            let (took, waited) = match (&failed, ev) {
                (Some(f), Some(ev)) => (f.started.elapsed(), Some(f.started.saturating_duration_since(ev.received))),
                _ => (std::time::Duration::ZERO, None),
            };
            r.tally.add(took, true, limit, waited);
            // (Counted before the error is reported, as a reader of both expects.)
            p.env.metrics.handlers(&p.name, &mut r.tally);
        }
        if let Some(f) = failed.as_ref().filter(|_| p.tracing()) {
            let redacted = cur.ctx.redactor.redact(&error).into_owned();
            let at = super::location::error_location(&redacted);
            ctl.trace_failed(f, limit, redacted, at);
        }
        p.failed(cur, ev, error);
        if p.paused || p.watch.is_stuck() {
            ctl.leave_event();
            break;
        }
    }
    p.watch.end();
    let mut r = ctl.lock();
    if let Some(t) = r.traced.take() {
        p.keep_run(batch, &subs, t.done);
    }
    p.tally = std::mem::take(&mut r.tally);
    p.done = p.done.max(r.done);
    let next = r.next;
    drop(r);
    drop(ctl);
    let now = tokio::time::Instant::now();
    match p.flush_at {
        None => p.flush_at = Some(now + CURSOR_FLUSH),
        Some(at) if at <= now => p.commit_busy(cur),
        Some(_) => {}
    }
    next
}

/// One event through the script, then its progress noted (and committed when due).
async fn run_event(cur: &Loaded, batch: &Arc<Vec<Event>>, i: usize, p: &mut Progress) {
    let ev = &batch[i];
    if ev.seq != 0 && ev.seq <= p.done {
        return; // already finished before a restart
    }
    if !p.paused {
        handle(cur, batch, i, p).await;
    } else if p.tracing() {
        if let Some(subs) = cur.subscriptions().map(|s| s.snapshot()) {
            if let Some(mut t) = p.event_trace(cur, batch, i, &subs) {
                t.trace.skipped = Some("paused (too many consecutive failures; it resumes when its file changes)".into());
                p.keep_trace(Pending::One(Box::new(t)));
            }
        }
    }
    p.done = p.done.max(ev.seq);
    let now = tokio::time::Instant::now();
    match p.flush_at {
        None => p.flush_at = Some(now + CURSOR_FLUSH),
        Some(at) if at <= now => p.commit_busy(cur),
        Some(_) => {}
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs `agent.on_unload` (if any) and commits, before a version goes.
async fn unload(cur: &Loaded, p: &mut Progress) {
    let f = cur.lua.app_data_ref::<OnUnload>().and_then(|u| u.0.lock().unwrap_or_else(|e| e.into_inner()).clone());
    if let Some(f) = f {
        let c = call(cur, p, &f, mlua::Value::Nil, "on_unload", None, 0).await;
        p.trace_run(cur, "on_unload", c);
    }
    p.commit(cur);
}

async fn fire_timers(cur: &Loaded, p: &mut Progress) {
    let due = cur.lua.app_data_ref::<Timers>().map(|t| t.take_due()).unwrap_or_default();
    // The timers that fired once are no longer held: their room goes back to Lua.
    super::timers::charge(&cur.lua);
    for f in due {
        if !p.paused && !p.watch.is_stuck() {
            let c = call(cur, p, &f, mlua::Value::Nil, "timer", None, 0).await;
            p.trace_run(cur, "timer", c);
        }
    }
    p.commit(cur);
}

/// Runs every handler of the script that matches the event, in registration order.
async fn handle(cur: &Loaded, batch: &Arc<Vec<Event>>, i: usize, p: &mut Progress) {
    let ev = &batch[i];
    let Some(subs) = cur.subscriptions().map(|s| s.snapshot()) else {
        return;
    };
    let mut traced = if p.tracing() { p.event_trace(cur, batch, i, &subs) } else { None };
    if !subs.iter().any(|s| s.matches(ev.rel(), ev.kind())) {
        // (Subscriptions to the rel, none to the type: that is worth a trace.)
        if let Some(t) = traced {
            p.keep_trace(Pending::One(Box::new(t)));
        }
        return;
    }
    if p.env.trace {
        p.env.emit(ScriptOutput::Event {
            script: p.name.to_string(),
            seq: ev.seq,
            rel: ev.rel().to_string(),
            kind: ev.kind().to_string(),
            href: ev.href().to_string(),
        });
    }
    // The event's table is built in Lua by the first handler call (`interop::event_caller`) and
    // handed to the next ones: one entry into Lua per handler call.
    // The source string is handed to every call: a first call that failed to build the table
    // leaves it to the next.
    let prepared = interop::event_caller(&cur.lua).and_then(|caller| Ok((caller, cur.lua.create_string(ev.packed())?)));
    let (caller, source) = match prepared {
        Ok(both) => both,
        Err(e) => {
            let error = format!("cannot build the event table: {}", describe(&e));
            if let Some(mut t) = traced {
                t.trace.skipped = Some(cur.ctx.redactor.redact(&error).into_owned());
                p.keep_trace(Pending::One(Box::new(t)));
            }
            p.failed(cur, Some(ev), error);
            return;
        }
    };
    let token = interop::next_token();
    let mut left = subs.iter().filter(|s| s.matches(ev.rel(), ev.kind())).count();
    for (i, sub) in subs.iter().enumerate().filter(|(_, s)| s.matches(ev.rel(), ev.kind())) {
        left -= 1;
        if p.paused || p.watch.is_stuck() {
            break;
        }
        let used = traced.as_ref().map_or(0, |t| t.trace.bytes);
        let args = (token, ev.rel(), ev.kind(), ev.seq, &source, left == 0, &sub.func);
        let c = call(cur, p, &caller, args, "handler", Some(ev), used).await;
        if let (Some(t), Some(mut c)) = (traced.as_mut(), c) {
            c.call.sub = Some(i);
            t.trace.add(c);
        }
    }
    if let Some(t) = traced {
        p.keep_trace(Pending::One(Box::new(t)));
    }
    if p.env.trace {
        if let Ok(json) = api_state::state_json(&cur.lua) {
            if p.traced_state.as_ref() != Some(&json) {
                p.env.emit(ScriptOutput::State { script: p.name.to_string(), json: json.clone() });
                p.traced_state = Some(json);
            }
        }
    }
}

/// A panic's message.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into())
}

/// One call into the script, under its limits; what it did when traces are kept (`used`: the
/// bytes its trace holds already).
async fn call(
    cur: &Loaded,
    p: &mut Progress,
    f: &Function,
    arg: impl mlua::IntoLuaMulti,
    what: &'static str,
    ev: Option<&Event>,
    used: usize,
) -> Option<trace::Run> {
    let limits = &p.settings.limits.clone();
    let started = Instant::now();
    let tracing = p.tracing();
    if tracing {
        trace::begin(&cur.lua, started, used);
    }
    if let Some(b) = budget::budget(&cur.lua) {
        b.arm_from(limits, started);
    }
    // Log lines a handler writes carry its event: rel, type, seq.
    set_current(cur, ev);
    p.watch.begin_at(started, what, ev.map(|e| (e.rel(), e.kind(), e.seq)), limits.handler_timeout);
    // A panic in Rust code under the call (a bug of ours) becomes this call's error, not a dead
    // thread the watchdog would report as stuck.
    let mut call = std::pin::pin!(futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(f.call_async::<()>(arg))));
    // Most handlers finish without awaiting anything: poll once before arming a timer (a timer
    // per call costs more than a trivial handler). The hook bounds CPU time either way.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    let result = match first {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            let deadline = tokio::time::Instant::from_std(started) + limits.handler_timeout;
            tokio::time::timeout_at(deadline, call).await
        }
    };
    let result =
        result.map(|r| r.unwrap_or_else(|panic| Err(mlua::Error::runtime(format!("internal error of the agent (please report it): {}", panic_text(&*panic))))));
    p.watch.end();
    set_current(cur, None);
    let took = started.elapsed();
    let steps = if tracing { Some(trace::end(&cur.lua)) } else { None };
    let duration_us = took.as_micros() as u64;
    let limit = result.is_err() || budget::budget(&cur.lua).is_some_and(|b| b.exhausted());
    let failed = !matches!(result, Ok(Ok(())));
    let waited = ev.map(|e| started.saturating_duration_since(e.received));
    p.tally.add(took, failed, limit, waited);
    if failed {
        // (Counted before the error is reported, as a reader of both expects.)
        p.env.metrics.handlers(&p.name, &mut p.tally);
    }
    let mut traced = steps.map(|(steps, bytes, dropped)| {
        let c = trace::Call {
            what: what.into(),
            sub: None,
            start_ms: 0,
            us: duration_us,
            outcome: if !failed {
                "ok"
            } else if limit {
                "limit"
            } else {
                "error"
            }
            .into(),
            error: None,
            at: None,
            steps,
            started: Some(started),
        };
        (c, bytes, dropped)
    });
    let mut note = |error: &str| {
        if let Some((c, bytes, _)) = traced.as_mut() {
            let error = cur.ctx.redactor.redact(error).into_owned();
            c.at = super::location::error_location(&error);
            *bytes += error.len().min(4096);
            c.error = Some(error.chars().take(4096).collect());
        }
    };
    match result {
        Ok(Ok(())) => {
            p.failures = 0;
            match ev {
                Some(ev) => {
                    tracing::trace!(script = %p.name, rel = %ev.rel(), r#type = %ev.kind(), seq = ev.seq, duration_us, "handler returned")
                }
                None => tracing::trace!(script = %p.name, what, duration_us, "call returned"),
            }
        }
        Ok(Err(e)) => {
            let error = format!("{what}: {}", describe(&e)).trim_start_matches("handler: ").to_string();
            note(&error);
            p.failed(cur, ev, error)
        }
        Err(_) => {
            let error = format!("time limit exceeded (scripts.handler_timeout_ms = {})", limits.handler_timeout.as_millis());
            note(&error);
            p.failed(cur, ev, error)
        }
    }
    traced.map(|(call, bytes, dropped)| trace::Run { call, bytes, dropped })
}

/// Notes the event the next call runs for (`None`: a timer, `on_unload`).
fn set_current(cur: &Loaded, ev: Option<&Event>) {
    if let Some(mut c) = cur.lua.app_data_mut::<ctx::CurrentEvent>() {
        c.active = ev.is_some();
        if let Some(ev) = ev {
            c.rel.clear();
            c.rel.push_str(ev.rel());
            c.kind.clear();
            c.kind.push_str(ev.kind());
            c.seq = ev.seq;
        }
    }
}

impl Progress {
    fn new(name: Arc<str>, env: Arc<ScriptEnv>, cursor: u64, watch: Arc<Watch>) -> Progress {
        Progress {
            name,
            done: cursor,
            committed: cursor,
            saved: Saved::default(),
            failures: 0,
            paused: false,
            last_error: None,
            flush_at: None,
            traces_written: None,
            settings: env.settings(),
            traced_state: Some("{}".to_string()),
            env,
            watch,
            traces: Default::default(),
            traced_runs: 0,
            errors: None,
            tally: Default::default(),
            handlers: None,
            subscribed: None,
        }
    }

    /// Whether runs are traced.
    fn tracing(&self) -> bool {
        self.settings.traces_per_script > 0
    }

    /// Whether events go through the script in runs (`dispatch`), not one call at a time
    /// (`run_event`): not while paused (the events are only noted), reported to `replay` and
    /// `test` (`env.trace`), or while each call is logged ("handler returned", at trace level).
    fn in_runs(&self) -> bool {
        !self.paused && !self.env.trace && !tracing::enabled!(tracing::Level::TRACE)
    }

    /// A trace for the event, when a subscription of the script looks at its rel (None
    /// otherwise: an event the script does not look at leaves no trace).
    fn event_trace(&mut self, cur: &Loaded, batch: &Arc<Vec<Event>>, i: usize, subs: &Arc<Vec<ctx::Sub>>) -> Option<OneRun> {
        let rel = batch[i].rel();
        if !subs.iter().any(|s| s.takes_rel(rel)) {
            return None;
        }
        let t = Trace::new("", "", cur.ctx.version, "event", 0);
        Some(OneRun { trace: t, event: Some((batch.clone(), i)), subs: Some(self.subscribed(subs)), at: None })
    }

    /// The subscriptions of the snapshot `subs` as traces name them (made once per snapshot).
    fn subscribed(&mut self, subs: &Arc<Vec<ctx::Sub>>) -> Arc<Vec<trace::Subscribed>> {
        if let Some((of, described)) = &self.subscribed {
            if Arc::ptr_eq(of, subs) {
                return described.clone();
            }
        }
        let described: Arc<Vec<trace::Subscribed>> =
            Arc::new(subs.iter().map(|s| trace::Subscribed { rel: s.rel.clone(), kind: s.kind.clone(), line: s.line }).collect());
        self.subscribed = Some((subs.clone(), described.clone()));
        described
    }

    /// A timer's or `on_unload`'s run, traced.
    fn trace_run(&mut self, cur: &Loaded, kind: &'static str, c: Option<trace::Run>) {
        if let Some(c) = c {
            let mut t = Trace::new("", "", cur.ctx.version, kind, 0);
            t.add(c);
            self.keep_trace(Pending::of(t));
        }
    }

    /// A run's trace, until the commit. Only the last `traces_per_script` are kept at once:
    /// a burst costs what the database keeps of it, not one trace per event (unless someone
    /// listens: `tap` shows every one).
    fn keep_trace(&mut self, mut t: Pending) {
        self.traced_runs += 1;
        if let Pending::One(t) = &mut t {
            // (A run with a call is dated by its first call.)
            t.at = t.at.or_else(|| t.trace.calls.first().and_then(|c| c.started)).or_else(|| Some(std::time::Instant::now()));
        }
        if self.traces.len() >= self.settings.traces_per_script && !self.env.listened() {
            self.traces.pop_front();
        }
        self.traces.push_back(t);
    }

    /// The traces of a run through `dispatch` (`done`: each with its event's index in `batch`).
    fn keep_run(&mut self, batch: &Arc<Vec<Event>>, subs: &Arc<Vec<ctx::Sub>>, mut done: Vec<(Trace, usize)>) {
        if done.is_empty() {
            return;
        }
        // The ring would let the first ones go at once, and the list with room for the whole run
        // would live as long as one trace of it is kept: a script's traces would cost a run's
        // (room for up to 256 made by `dispatch::Traced::new`), not `traces_per_script`.
        if !self.env.listened() {
            let over = done.len().saturating_sub(self.settings.traces_per_script);
            self.traced_runs += over;
            done.drain(..over);
        }
        done.shrink_to_fit();
        let run = Arc::new(RunTraces { batch: batch.clone(), subs: self.subscribed(subs), traces: done, ended: Instant::now() });
        for k in 0..run.traces.len() {
            self.keep_trace(Pending::InRun(run.clone(), k));
        }
    }

    /// The pending traces as one chunk for the commit (the state it writes on the last), and
    /// each one's JSON for whoever listens.
    fn trace_chunk(&mut self, written: Option<&super::state::Delta>, held: std::collections::VecDeque<Pending>) -> Option<(TraceChunk, trace::Live)> {
        if self.traces.is_empty() && held.is_empty() {
            return None;
        }
        let n = std::mem::take(&mut self.traced_runs);
        let pending = held.into_iter().chain(std::mem::take(&mut self.traces));
        let mut traces: Vec<Trace> = made(pending, &self.env.account.name, &self.name).collect();
        if let (Some(d), Some(last)) = (written, traces.last_mut()) {
            last.state = Some(trace::StateWritten { set: d.set.iter().map(|(k, _)| k.clone()).collect(), removed: d.removed.clone(), traces: n });
        }
        Some(trace::chunk(traces, self.settings.traces_per_script, self.env.listened()))
    }

    /// A failed call: logged (identical repeats only now and then), counted, reported.
    fn failed(&mut self, cur: &Loaded, ev: Option<&Event>, error: String) {
        self.report(cur, ev, error);
        self.failures += 1;
        let script = &*self.name;
        let max = self.settings.max_consecutive_failures;
        if max > 0 && self.failures >= max && !self.paused {
            self.paused = true;
            self.env.board.set_paused(script, true);
            if self.env.logs_script_errors() {
                tracing::error!(script, failures = self.failures, "script paused after {max} consecutive failures; fix it and save the file to resume");
            }
            self.env.emit(ScriptOutput::Paused { script: script.to_string(), failures: self.failures });
        }
    }

    /// An error of the script: logged (identical repeats only now and then) and reported.
    fn report(&mut self, cur: &Loaded, ev: Option<&Event>, error: String) {
        let error = match cur.ctx.redactor.redact(&error) {
            std::borrow::Cow::Owned(redacted) => redacted,
            std::borrow::Cow::Borrowed(_) => error,
        };
        let script = &*self.name;
        self.env.board.failed(script, &error, ev.map_or(0, |e| e.seq));
        let repeats = match &mut self.last_error {
            Some((last, n)) if *last == error => {
                *n += 1;
                *n
            }
            _ => {
                self.last_error = Some((error.clone(), 1));
                1
            }
        };
        // (`replay` and `test` print each error in their own output.)
        if let Some(errors) = &mut self.errors {
            errors.push(error.clone());
        }
        if repeats.is_power_of_two() && self.env.logs_script_errors() {
            let (first, traceback) = error.split_once('\n').unwrap_or((&error, ""));
            let (rel, kind, seq) = ev.map_or(("", "", 0), |e| (e.rel(), e.kind(), e.seq));
            tracing::error!(script, version = cur.ctx.version, rel, r#type = kind, seq, repeats, traceback, "handler failed: {first}");
        }
        self.env.emit(ScriptOutput::HandlerError {
            script: script.to_string(),
            rel: ev.map(|e| e.rel().to_string()).unwrap_or_default(),
            kind: ev.map(|e| e.kind().to_string()).unwrap_or_default(),
            seq: ev.map_or(0, |e| e.seq),
            error,
        });
    }

    /// Writes the cursor and what changed in `agent.state`, in one transaction, with the
    /// traces. A state that cannot be saved (too big, a cycle, a function) is reported like a
    /// handler error (the same message only now and then); the cursor still moves, the saved
    /// state stays as it was.
    fn commit(&mut self, cur: &Loaded) {
        self.commit_with(cur, false);
    }

    /// `commit` between two events of a burst: the traces wait for `TRACE_FLUSH`.
    fn commit_busy(&mut self, cur: &Loaded) {
        self.commit_with(cur, true);
    }

    fn commit_with(&mut self, cur: &Loaded, busy: bool) {
        self.flush_at = None;
        self.env.metrics.handlers(&self.name, &mut self.tally);
        if self.watch.is_stuck() {
            return;
        }
        self.watch.begin("saving agent.state", None, self.settings.limits.handler_timeout);
        let delta = match self.saved.diff(&cur.lua, self.settings.state_max_bytes) {
            Ok(d) if d.bytes > self.settings.state_max_bytes => Err(format!(
                "agent.state is {} bytes of JSON, over scripts.state_max_bytes ({}); changes to it are not saved",
                d.bytes, self.settings.state_max_bytes
            )),
            other => other,
        };
        self.watch.end();
        let delta = match delta {
            Ok(d) => Some(d).filter(|d| !d.is_empty()),
            Err(error) => {
                self.report(cur, None, format!("agent.state not saved: {error}"));
                None
            }
        };
        let cursor = (self.done > self.committed).then_some(self.done);
        let now = tokio::time::Instant::now();
        // (A state written is noted on the last trace of its commit: those go with it.)
        let hold = busy && delta.is_none() && !self.env.listened() && self.watch.may_hold() && self.traces_written.is_some_and(|at| now < at + TRACE_FLUSH);
        // Held back: kept in the watch once the commit of their events' cursor is done, where
        // the next commit takes them back first and the host writes them if this thread never
        // commits again (stuck, or still busy when a shutdown's grace ends). (As they are: a
        // `Pending` holds nothing of the Lua state. Making them whole at every hold was, with
        // ten scripts, about one trace made per event.)
        let mut to_hold: Option<std::collections::VecDeque<Pending>> = (hold && !self.traces.is_empty()).then(|| std::mem::take(&mut self.traces));
        if to_hold.is_some() {
            // (What a later commit's state notes as "committed with" is its own runs only.)
            self.traced_runs = 0;
            self.flush_at = Some(now + CURSOR_FLUSH);
        }
        let traces = if hold { None } else { self.trace_chunk(delta.as_ref(), take_held(&self.watch)) };
        if traces.is_some() {
            self.traces_written = Some(now);
        }
        let keep = self.settings.traces_per_script;
        let hold_in = |watch: &Watch, runs: std::collections::VecDeque<Pending>| {
            let mut held = take_held(watch);
            held.extend(runs);
            held.drain(..held.len().saturating_sub(keep));
            watch.put_held(Box::new(held));
        };
        if cursor.is_none() && delta.is_none() && traces.is_none() {
            // (Only runs that moved no cursor: timers'.)
            if let Some(runs) = to_hold {
                hold_in(&self.watch, runs);
            }
            return;
        }
        self.env.metrics.lua_memory(&self.name, cur.lua.used_memory());
        let write = delta.as_ref().map(|d| StateWrite { replace_all: d.replace_all, set: &d.set, removed: &d.removed });
        let chunk = traces.as_ref().map(|(c, _)| c);
        let (store, name, watch) = (&self.env.store, &self.name, &self.watch);
        let Some(written) = self.watch.unless_stuck(|| {
            let written = store.commit_script_with(name, cursor, write.as_ref(), chunk);
            // (Under the gate: declared stuck after this, the host finds them.)
            if let Some(runs) = to_hold.take() {
                hold_in(watch, runs);
            }
            written
        }) else {
            return; // declared stuck meanwhile: its replacement writes from now on
        };
        match written {
            Ok(()) => {
                for (seq, json) in traces.map(|(_, live)| live).unwrap_or_default() {
                    self.env.emit(ScriptOutput::Trace { script: self.name.to_string(), seq, json });
                }
                self.committed = self.done;
                if let Some(d) = delta {
                    let bytes = d.set.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                    self.env.metrics.state_written(&self.name, bytes as u64);
                    self.saved.applied(d);
                }
            }
            Err(error) => {
                tracing::error!(script = %self.name, %error, "cannot save the script's progress")
            }
        }
    }
}

/// The traces `watch`'s commits held back (none if none were).
fn take_held(watch: &Watch) -> std::collections::VecDeque<Pending> {
    watch.take_held().and_then(|b| b.downcast::<std::collections::VecDeque<Pending>>().ok()).map(|b| *b).unwrap_or_default()
}

/// Writes the traces a script's commits held back in a burst, for a thread that will not
/// commit again (stuck in a call, or still busy when a shutdown's grace ended): the events its
/// cursor has passed keep their traces.
pub(crate) fn write_held_traces(watch: &Watch, env: &ScriptEnv) {
    let held = take_held(watch);
    if held.is_empty() {
        return;
    }
    let (chunk, _) = trace::chunk(made(held, &env.account.name, &watch.name), env.settings().traces_per_script, false);
    if let Err(error) = env.store.add_traces(&watch.name, &chunk) {
        tracing::warn!(script = %watch.name, %error, "cannot write the script's traces");
    }
}

/// A version run by its caller instead of by a thread reading an inbox (`ucwa-agent test`): the
/// caller hands it events and moves its clock, on the caller's thread, and every handler, timer
/// and commit goes through the calls above, as in `run` (limits armed per call, the watchdog
/// told, the cursor and `agent.state` committed after each event); the errors those calls
/// reported come back to the caller. Kept in the state's app data between two calls, so the
/// caller's own Lua (a test case) can drive it.
pub(crate) struct Driven {
    ctx: ctx::ScriptCtx,
    modules: super::modules::Required,
    p: Progress,
}

impl Driven {
    /// Puts `loaded` under the caller's drive (its thread's watch is `watch`); gives its state.
    pub(crate) fn install(loaded: Loaded, watch: Arc<Watch>) -> mlua::Lua {
        let Loaded { lua, ctx, modules } = loaded;
        let mut p = Progress::new(ctx.name.clone(), ctx.env.clone(), 0, watch);
        p.watch.set_running(ctx.version);
        p.errors = Some(Vec::new());
        lua.set_app_data(Driven { ctx, modules, p });
        lua
    }

    /// The limits of the version's calls.
    pub(crate) fn limits(&self) -> budget::Limits {
        self.p.settings.limits
    }

    /// Runs `f` on the version with its progress; the errors it reported.
    async fn with<F>(lua: &mlua::Lua, f: F) -> mlua::Result<Vec<String>>
    where
        F: for<'a> FnOnce(&'a Loaded, &'a mut Progress) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    {
        // Taken out while it runs: a handler that calls back into the driver finds none.
        let d = lua.remove_app_data::<Driven>().ok_or_else(|| mlua::Error::runtime("cannot run events or timers from inside a handler or a timer"))?;
        let cur = Loaded { lua: lua.clone(), ctx: d.ctx, modules: d.modules };
        let mut p = d.p;
        if p.paused {
            let failures = p.failures;
            lua.set_app_data(Driven { ctx: cur.ctx, modules: cur.modules, p });
            return Err(mlua::Error::runtime(format!(
                "the script is paused after {failures} consecutive failures (scripts.max_consecutive_failures), as run pauses it: it gets no more events"
            )));
        }
        f(&cur, &mut p).await;
        let errors = p.errors.replace(Vec::new()).unwrap_or_default();
        lua.set_app_data(Driven { ctx: cur.ctx, modules: cur.modules, p });
        Ok(errors)
    }

    /// Runs the handlers `ev` matches and commits, as the inbox loop does for one event.
    pub(crate) async fn event(lua: &mlua::Lua, ev: Event) -> mlua::Result<Vec<String>> {
        Driven::with(lua, |cur, p| {
            Box::pin(async move {
                let seq = ev.seq;
                handle(cur, &Arc::new(vec![ev]), 0, p).await;
                p.done = p.done.max(seq);
                p.commit(cur);
            })
        })
        .await
    }

    /// Fires the timers due by the (manual) clock and commits, as the inbox loop does.
    pub(crate) async fn timers(lua: &mlua::Lua) -> mlua::Result<Vec<String>> {
        Driven::with(lua, |cur, p| Box::pin(fire_timers(cur, p))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script whose ring keeps the last `keep` traces.
    fn progress(keep: usize) -> Progress {
        let mut settings = ScriptSettings::new(budget::Limits::default());
        settings.traces_per_script = keep;
        let env = Arc::new(ScriptEnv::new(settings, Arc::new(crate::store::Store::in_memory())));
        Progress::new("s".into(), env, 0, Watch::new("s".into()))
    }

    /// The room for traces the ring keeps alive (a trace of a run keeps its run's list).
    fn kept_room(p: &Progress) -> usize {
        let mut runs: Vec<*const RunTraces> = Vec::new();
        let mut room = 0;
        for t in &p.traces {
            match t {
                Pending::One(_) => room += 1,
                Pending::InRun(run, _) if !runs.contains(&Arc::as_ptr(run)) => {
                    runs.push(Arc::as_ptr(run));
                    room += run.traces.capacity();
                }
                Pending::InRun(..) => {}
            }
        }
        room
    }

    fn traces(n: usize) -> Vec<(Trace, usize)> {
        (0..n).map(|i| (Trace::new("", "", 1, "event", 0), i)).collect()
    }

    /// A burst's run traces more events than the ring keeps: those it lets go are freed, not
    /// kept alive by the few it keeps (a script's traces cost `traces_per_script`, not a run).
    #[test]
    fn a_long_run_keeps_no_more_traces_than_the_ring() {
        let mut p = progress(2);
        p.keep_run(&Arc::new(Vec::new()), &Arc::new(Vec::new()), traces(1000));
        assert_eq!(p.traces.len(), 2);
        assert!(kept_room(&p) <= 2 * 2, "room for {} traces kept for 2", kept_room(&p));
    }

    /// Runs of one traced event each (a subscription to a rare rel in a busy batch): each keeps
    /// room for one trace, not the room `dispatch::Traced` made for the whole run.
    #[test]
    fn runs_of_one_trace_keep_room_for_one() {
        let mut p = progress(100);
        for _ in 0..100 {
            let mut t = dispatch::Traced::new(Default::default(), 1, 1000);
            t.done.extend(traces(1));
            p.keep_run(&Arc::new(Vec::new()), &Arc::new(Vec::new()), t.done);
        }
        assert_eq!(p.traces.len(), 100);
        assert!(kept_room(&p) <= 2 * 100, "room for {} traces kept for 100", kept_room(&p));
    }
}
