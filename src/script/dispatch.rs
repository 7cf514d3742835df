//! A run of events through a script in one entry into Lua: a Lua function of the state's
//! (`DISPATCH`) loops over the run's handler calls and asks a raw C function (`step`) for each
//! next one. Entering Lua through mlua (`call_async`: a recycled coroutine, its poll, a lock and
//! value references per call) cost about as much as a trivial handler; `step` reads and writes
//! the runner's state for the run (`Control`) through a pointer, with no mlua callback.
//!
//! What the runner did around each call is done in `step` between two handlers: the budget
//! re-armed (instructions, deadline), the watchdog told, the current event noted for log lines,
//! the call counted and, with traces on, its recording started and ended (`Traced`). A handler's error ends the Lua call (its traceback is made by mlua as for a
//! call of its own, frames of the handler first, then one `event:` frame); the runner reports
//! it and enters again at the next handler (`runner::dispatch`). The run stops before an event
//! once the pool's time slice, a due timer or the cursor's flush is due, or once a handler
//! changed the subscriptions or set a timer, so timers and other scripts still take turns with
//! events. The runner's time limit follows the handler now running (`Control::running`).

use super::budget::{Budget, Limits};
use super::ctx::{RunNow, Sub};
use super::trace::{self, Recorder, Trace};
use super::watchdog::Watch;
use crate::metrics::HandlerTally;
use crate::ucwa::Event;
use mlua::ffi;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Called as `dispatch(ctl, handlers)`: `ctl` is the `Control` (a light userdata; scripts never
/// see this function or its arguments), `handlers` the subscriptions' functions in order.
/// `step` makes each event's table (as `interop`'s `CALL_EVENT` makes it) once, in C, and
/// hands the same table to the event's next handlers, also when a run is entered again after
/// a handler's error: every Lua instruction here runs under the count hook of the instruction
/// limit, and building the table in Lua (a constructor, three comparisons for its metatable, a
/// call of `setmetatable`, two stores) was about two thirds of this loop's instructions. The
/// handler is called from a temporary (`rawget(...)`), so that its frame in a traceback reads
/// "in function <file:line>", as it did when called on its own (a named local would make it
/// "in local 'f'", a table field "in field '?'").
pub(crate) const DISPATCH: &str = r#"
local step, rawget = ...
return function(ctl, handlers)
  while true do
    local h, t = step(ctl)
    if not h then
      return
    end
    rawget(handlers, h)(t)
  end
end
"#;

/// `step`'s upvalues (`Interop::install`, in this order): the event metatables, the weak
/// `sources` table, a table whose `[1]` is the table of the event under way (nil between runs),
/// the field names `rel`, `type` and `seq`, and the last `rel` and `type` strings pushed (most
/// events of a batch share them, and Lua hashes a short string each time it is pushed anew).
/// The event under way is not an upvalue of its own: under generational collection a young
/// value stored into an old closure is made old at once (a forward barrier), and every event
/// table would then live until a major collection; a store into a table only marks the table.
pub(crate) const STEP_UPVALUES: c_int = 9;
const UP_MT: c_int = ffi::lua_upvalueindex(1);
const UP_IM_MT: c_int = ffi::lua_upvalueindex(2);
const UP_SOURCES: c_int = ffi::lua_upvalueindex(3);
const UP_CURRENT: c_int = ffi::lua_upvalueindex(4);
const UP_KEY_REL: c_int = ffi::lua_upvalueindex(5);
const UP_KEY_TYPE: c_int = ffi::lua_upvalueindex(6);
const UP_KEY_SEQ: c_int = ffi::lua_upvalueindex(7);
const UP_LAST_REL: c_int = ffi::lua_upvalueindex(8);
const UP_LAST_TYPE: c_int = ffi::lua_upvalueindex(9);

/// Why a run returned to the runner without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Every event of the run went through.
    End,
    /// Before an event: the slice, a timer, the flush, or a change the runner must look at.
    Turn,
    /// The watchdog gave up on the script.
    Stuck,
}

/// The runner's state for a run, shared with `step`. Only the thread running the script's
/// Lua touches it while Lua runs, and the runner between two polls; the lock is never
/// contended (it is there so the runner's future stays `Send` without `unsafe`).
pub(crate) struct Control {
    run: Mutex<Run>,
    /// The table of the event under way is still to be made: set when the event starts,
    /// cleared by `step` once it stored the table (so that a Lua memory error while making it
    /// leaves the event's next handler a table of its own, not the one before). Outside the
    /// lock: `step` clears it after every new event.
    fresh: AtomicBool,
    budget: Arc<Budget>,
    watch: Arc<Watch>,
    limits: Limits,
    now: Arc<RunNow>,
}

/// Where a run is.
pub(crate) struct Run {
    batch: Arc<Vec<Event>>,
    subs: Arc<Vec<Sub>>,
    /// The next event to start.
    pub next: usize,
    /// The event whose handlers run, and the next subscription to look at for it.
    event: Option<usize>,
    sub: usize,
    /// A handler call is running, since `started`.
    running: bool,
    started: Instant,
    /// The last event whose handlers have all returned (`seq`); events at or below it are skipped.
    pub done: u64,
    /// No new event starts at or after this instant (the first one of the run always does).
    stop_at: Option<Instant>,
    /// Whether an event was started in this run (the first is started whatever `stop_at` says).
    started_one: bool,
    /// `RunNow::changes` when the run began.
    changes: u64,
    /// The calls that returned, counted.
    pub tally: HandlerTally,
    /// With traces on: each event's trace, made as the runner makes it for a call per handler.
    pub traced: Option<Traced>,
    /// At least one handler call returned without error.
    pub succeeded: bool,
    pub stopped: Stopped,
}

/// The traces of a run (`scripts.traces_per_script` > 0).
pub(crate) struct Traced {
    rec: Recorder,
    version: u64,
    /// The trace of the event under way, when a subscription looks at its rel (none
    /// otherwise: an event the script does not look at leaves no trace), and its index.
    current: Option<(Trace, usize)>,
    /// The traces of the events done, in order, with their indexes in the batch.
    pub done: Vec<(Trace, usize)>,
}

impl Traced {
    /// `events`: how many the run may trace at most (room made for them at once: a trace is a
    /// few hundred bytes, and a growing list copied them over and over).
    pub(crate) fn new(rec: Recorder, version: u64, events: usize) -> Traced {
        Traced { rec, version, current: None, done: Vec::with_capacity(events.min(256)) }
    }

    /// A call ended: its steps, its outcome (and error: text and `file:line`; its bytes count).
    fn add(&mut self, sub: usize, started: Instant, took: std::time::Duration, outcome: &'static str, error: Option<(String, Option<String>)>) {
        let (steps, mut bytes, dropped) = trace::end_on(&self.rec);
        let Some((t, _)) = self.current.as_mut() else { return };
        let (error, at) = match error {
            Some((e, at)) => {
                bytes += e.len().min(4096);
                (Some(e.chars().take(4096).collect()), at)
            }
            None => (None, None),
        };
        let call = trace::Call {
            what: "handler".into(),
            sub: Some(sub),
            start_ms: 0,
            us: took.as_micros() as u64,
            outcome: outcome.into(),
            error,
            at,
            steps,
            started: Some(started),
        };
        t.add(trace::Run { call, bytes, dropped });
    }

    fn finish_event(&mut self) {
        if let Some(t) = self.current.take() {
            self.done.push(t);
        }
    }
}

/// What `step` hands to Lua.
enum Next {
    Stop,
    /// The next handler (1-based) for the event whose table exists.
    Handler(usize),
    /// The first handler of a new event, and what its table is made of (pointers into the
    /// batch, which the run holds), with whether it takes the IM metatable.
    First(usize, *const u8, usize, *const u8, usize, u64, *const u8, usize, bool),
}

/// A handler call that ended the Lua call (an error, the time limit): which event, since when.
pub(crate) struct Failed {
    pub event: usize,
    /// The subscription it ran for.
    pub sub: usize,
    pub started: Instant,
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        batch: Arc<Vec<Event>>,
        from: usize,
        subs: Arc<Vec<Sub>>,
        done: u64,
        stop_at: Option<Instant>,
        budget: Arc<Budget>,
        watch: Arc<Watch>,
        limits: Limits,
        now: Arc<RunNow>,
        tally: HandlerTally,
        traced: Option<Traced>,
    ) -> Control {
        now.set_batch(Some(batch.clone()));
        let changes = now.changes();
        let run = Run {
            batch,
            subs,
            next: from,
            event: None,
            sub: 0,
            running: false,
            started: Instant::now(),
            done,
            stop_at,
            started_one: false,
            changes,
            tally,
            traced,
            succeeded: false,
            stopped: Stopped::End,
        };
        Control { run: Mutex::new(run), fresh: AtomicBool::new(false), budget, watch, limits, now }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the handler call now running started (the runner's time limit follows it).
    pub(crate) fn running(&self) -> Option<Instant> {
        let r = self.lock();
        r.running.then_some(r.started)
    }

    /// The handler call that was running when the Lua call ended, if one was (the next entry
    /// goes on at the event's next handler).
    pub(crate) fn take_failed(&self) -> Option<Failed> {
        let mut r = self.lock();
        if !std::mem::take(&mut r.running) {
            return None;
        }
        Some(Failed { event: r.event?, sub: r.sub.saturating_sub(1), started: r.started })
    }

    /// With traces on, the failed call's trace: `limit` (or an error), its error's text (redacted)
    /// and `file:line`.
    pub(crate) fn trace_failed(&self, f: &Failed, limit: bool, error: String, at: Option<String>) {
        if let Some(t) = self.lock().traced.as_mut() {
            t.add(f.sub, f.started, f.started.elapsed(), if limit { "limit" } else { "error" }, Some((error, at)));
        }
    }

    /// The event under way is left as finished: its next handlers do not run (the script
    /// paused).
    pub(crate) fn leave_event(&self) {
        let mut r = self.lock();
        if let Some(e) = r.event.take() {
            let seq = r.batch[e].seq;
            r.done = r.done.max(seq);
        }
        if let Some(t) = r.traced.as_mut() {
            t.finish_event();
        }
    }

    /// The next handler call of the run, its bookkeeping done; or where the run stops.
    fn advance(&self) -> Next {
        let now = Instant::now();
        let mut r = self.lock();
        let r = &mut *r;
        if std::mem::take(&mut r.running) {
            let waited = r.event.and_then(|e| r.batch.get(e)).map(|ev| r.started.saturating_duration_since(ev.received));
            let took = now.saturating_duration_since(r.started);
            r.tally.add(took, false, self.budget.exhausted(), waited);
            r.succeeded = true;
            if let Some(t) = r.traced.as_mut() {
                t.add(r.sub.saturating_sub(1), r.started, took, "ok", None);
            }
        }
        if self.watch.is_stuck() {
            r.stopped = Stopped::Stuck;
            return Next::Stop;
        }
        loop {
            if let Some(e) = r.event {
                let ev = &r.batch[e];
                if let Some(j) = (r.sub..r.subs.len()).find(|&j| r.subs[j].matches(ev.rel(), ev.kind())) {
                    r.sub = j + 1;
                    r.running = true;
                    r.started = now;
                    self.budget.arm_from(&self.limits, now);
                    self.watch.begin_at(now, "handler", Some((ev.rel(), ev.kind(), ev.seq)), self.limits.handler_timeout);
                    self.now.set_at(e);
                    if let Some(t) = r.traced.as_mut() {
                        trace::begin_on(&t.rec, now, t.current.as_ref().map_or(0, |(t, _)| t.bytes));
                    }
                    if !self.fresh.load(Ordering::Relaxed) {
                        return Next::Handler(j + 1);
                    }
                    let (rel, kind, packed) = (ev.rel(), ev.kind(), ev.packed());
                    let im = takes_im_metatable(rel);
                    return Next::First(j + 1, rel.as_ptr(), rel.len(), kind.as_ptr(), kind.len(), ev.seq, packed.as_ptr(), packed.len(), im);
                }
                r.done = r.done.max(ev.seq);
                r.event = None;
                if let Some(t) = r.traced.as_mut() {
                    t.finish_event();
                }
            }
            if r.next >= r.batch.len() {
                r.stopped = Stopped::End;
                return Next::Stop;
            }
            if r.started_one && (r.stop_at.is_some_and(|at| now >= at) || self.now.changes() != r.changes) {
                r.stopped = Stopped::Turn;
                return Next::Stop;
            }
            let i = r.next;
            r.next += 1;
            let ev = &r.batch[i];
            if ev.seq != 0 && ev.seq <= r.done {
                continue; // already finished before a restart
            }
            r.started_one = true;
            if let Some(t) = r.traced.as_mut() {
                if r.subs.iter().any(|s| s.takes_rel(ev.rel())) {
                    t.current = Some((Trace::new("", "", t.version, "event", 0), i));
                }
            }
            // (From its first matching subscription: the subscriptions are matched once each.)
            match r.subs.iter().position(|s| s.matches(ev.rel(), ev.kind())) {
                Some(first) => {
                    r.event = Some(i);
                    r.sub = first;
                    self.fresh.store(true, Ordering::Relaxed);
                }
                None => {
                    // (Subscriptions to the rel, none to the type: that is worth a trace.)
                    r.done = r.done.max(ev.seq);
                    if let Some(t) = r.traced.as_mut() {
                        t.finish_event();
                    }
                }
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.now.set_batch(None);
    }
}

/// Pushes the string `bytes..len`: the one upvalue `up` holds if it is the same, else a new one,
/// which `up` then holds.
///
/// # Safety
/// `up` is one of `step`'s string upvalues; `bytes..len` is readable.
unsafe fn push_remembered(state: *mut ffi::lua_State, up: c_int, bytes: *const u8, len: usize) {
    let mut had = 0usize;
    let held = ffi::lua_tolstring(state, up, &mut had);
    if !held.is_null() && had == len && std::slice::from_raw_parts(held as *const u8, had) == std::slice::from_raw_parts(bytes, len) {
        ffi::lua_pushvalue(state, up);
        return;
    }
    ffi::lua_pushlstring(state, bytes as *const _, len);
    ffi::lua_pushvalue(state, -1);
    ffi::lua_replace(state, up);
}

/// Whether an event of `rel` takes the IM metatable (its `__index` also asks agent-actions), as
/// `interop`'s `MAKE_EVENT` and `CALL_EVENT` decide in Lua.
fn takes_im_metatable(rel: &str) -> bool {
    matches!(rel, "message" | "messagingInvitation" | "contactPresence")
}

/// `step(ctl)` → nothing (the run stops), or the next handler's index and the event's table:
/// made here for the event's first handler (`rel`, `type`, `seq`, its metatable, its packed
/// form in `sources`), the same table for its next ones.
///
/// # Safety
/// Called by Lua only, from `DISPATCH`, as the closure `Interop::install` makes (its upvalues:
/// `STEP_UPVALUES`), whose first argument is a pointer to a `Control` that the runner keeps
/// alive and in place for as long as the Lua call it made runs (it owns it, boxed, across the
/// call's await). Nothing here unwinds into Lua: a panic is caught and stops the run. The
/// values pushed (which may raise Lua's memory error, a `longjmp`) are pushed after every Rust
/// value with a destructor is gone; the strings' bytes belong to the batch the `Control` holds.
pub(crate) unsafe extern "C-unwind" fn step(state: *mut ffi::lua_State) -> c_int {
    let ctl = ffi::lua_touserdata(state, 1) as *const Control;
    if ctl.is_null() {
        return 0;
    }
    // SAFETY: see above: the pointer is the runner's live `Control`.
    let ctl = &*ctl;
    let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctl.advance())).unwrap_or(Next::Stop);
    match next {
        Next::Stop => {
            // (The last event's table is the script's to keep, not this closure's.)
            ffi::lua_pushnil(state);
            ffi::lua_rawseti(state, UP_CURRENT, 1);
            0
        }
        Next::Handler(h) => {
            ffi::lua_pushinteger(state, h as ffi::lua_Integer);
            ffi::lua_rawgeti(state, UP_CURRENT, 1);
            2
        }
        Next::First(h, rel, rel_len, kind, kind_len, seq, packed, packed_len, im) => {
            ffi::lua_pushinteger(state, h as ffi::lua_Integer);
            ffi::lua_createtable(state, 0, 3);
            ffi::lua_pushvalue(state, UP_KEY_REL);
            push_remembered(state, UP_LAST_REL, rel, rel_len);
            ffi::lua_rawset(state, -3);
            ffi::lua_pushvalue(state, UP_KEY_TYPE);
            push_remembered(state, UP_LAST_TYPE, kind, kind_len);
            ffi::lua_rawset(state, -3);
            ffi::lua_pushvalue(state, UP_KEY_SEQ);
            ffi::lua_pushinteger(state, seq as ffi::lua_Integer);
            ffi::lua_rawset(state, -3);
            ffi::lua_pushvalue(state, if im { UP_IM_MT } else { UP_MT });
            ffi::lua_setmetatable(state, -2);
            // sources[t] = packed
            ffi::lua_pushvalue(state, -1);
            ffi::lua_pushlstring(state, packed as *const _, packed_len);
            ffi::lua_rawset(state, UP_SOURCES);
            ffi::lua_pushvalue(state, -1);
            ffi::lua_rawseti(state, UP_CURRENT, 1);
            ctl.fresh.store(false, Ordering::Relaxed);
            2
        }
    }
}
