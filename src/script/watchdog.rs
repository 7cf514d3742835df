//! The watchdog: every call into a script (handler, timer, `on_unload`, a commit of its
//! `agent.state`) is noted in the script's `Watch`; a thread of its own looks at every watch a
//! few times a second and declares a script *stuck* when a call has run past its wall-clock
//! limit plus a grace. The instruction hook stops Lua code at the limit; what the watchdog
//! catches is what the hook cannot see (a C function that does not return, a finalizer).
//!
//! A script's top level runs on a thread of its own too (`run_bounded_then`): a load that does not
//! finish in time is given up and reported, and the loading thread is left behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How much longer than its limit a call may take before the script is declared stuck. The
/// hook and the handler's timeout stop a call at the limit; a call still running this much
/// later is in code neither can interrupt.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);

/// What a script's thread is doing now (the watchdog reads it).
pub(crate) struct Watch {
    pub name: Arc<str>,
    doing: Mutex<Doing>,
    stuck: AtomicBool,
    /// Held while the script's thread writes its progress, and taken to declare it stuck: once
    /// stuck, a thread can no longer write over what its replacement writes.
    gate: Mutex<()>,
    /// The version the thread is running (a newer one may wait in its inbox).
    running: std::sync::atomic::AtomicU64,
    /// The thread has ended (set by the host, under its table of stuck versions).
    ended: AtomicBool,
    /// Traces the thread's commits held back in a burst (`runner`'s `TRACE_FLUSH`), where the
    /// host can still write them if the thread never commits again (stuck, or still busy when
    /// a shutdown's grace ends). Opaque here: `runner` puts and takes its own type.
    held: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Set when the host shuts down: from then on commits hold no traces back (a thread still
    /// busy at the end of the grace keeps committing until the process exits).
    hold_nothing: AtomicBool,
}

#[derive(Default)]
struct Doing {
    since: Option<Instant>,
    limit: Duration,
    what: &'static str,
    rel: String,
    kind: String,
    seq: u64,
}

impl Doing {
    fn describe(&self) -> String {
        if self.seq != 0 || !self.rel.is_empty() {
            format!("{} for {}/{} (seq {})", self.what, self.rel, self.kind, self.seq)
        } else {
            self.what.to_string()
        }
    }
}

impl Watch {
    pub(crate) fn new(name: Arc<str>) -> Arc<Watch> {
        Arc::new(Watch {
            name,
            doing: Mutex::new(Doing::default()),
            stuck: AtomicBool::new(false),
            gate: Mutex::new(()),
            running: std::sync::atomic::AtomicU64::new(0),
            ended: AtomicBool::new(false),
            held: Mutex::new(None),
            hold_nothing: AtomicBool::new(false),
        })
    }

    /// Commits hold no traces back from now on (a shutdown began).
    pub(crate) fn stop_holding(&self) {
        self.hold_nothing.store(true, Ordering::SeqCst);
    }

    /// Whether commits may hold traces back.
    pub(crate) fn may_hold(&self) -> bool {
        !self.hold_nothing.load(Ordering::SeqCst)
    }

    /// Keeps what a commit held back (replacing what was kept).
    pub(crate) fn put_held(&self, held: Box<dyn std::any::Any + Send>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(held);
    }

    /// What a commit held back, taken (by the next commit, or by the host for a thread that
    /// will not commit again).
    pub(crate) fn take_held(&self) -> Option<Box<dyn std::any::Any + Send>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A call starts: `what` (handler, timer, …), for an event (`rel`, `type`, `seq`) or not.
    /// The buffers are reused: no allocation per call.
    pub(crate) fn begin(&self, what: &'static str, ev: Option<(&str, &str, u64)>, limit: Duration) {
        self.begin_at(Instant::now(), what, ev, limit);
    }

    /// `begin`, for a call that started at `since`.
    pub(crate) fn begin_at(&self, since: Instant, what: &'static str, ev: Option<(&str, &str, u64)>, limit: Duration) {
        let mut d = self.lock();
        if d.since.replace(since).is_none() {
            BUSY.fetch_add(1, Ordering::Relaxed);
        }
        d.limit = limit;
        d.what = what;
        d.rel.clear();
        d.kind.clear();
        d.seq = 0;
        if let Some((rel, kind, seq)) = ev {
            d.rel.push_str(rel);
            d.kind.push_str(kind);
            d.seq = seq;
        }
    }

    /// The call returned.
    pub(crate) fn end(&self) {
        if self.lock().since.take().is_some() {
            BUSY.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the watchdog gave up on this script: its thread is to stop as soon as it can.
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Runs `write` unless the script is stuck (checked under the gate the watchdog takes).
    pub(crate) fn unless_stuck<T>(&self, write: impl FnOnce() -> T) -> Option<T> {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        (!self.is_stuck()).then(write)
    }

    /// Whether the thread has ended (a stuck one: its call returned at last).
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    pub(crate) fn set_ended(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    pub(crate) fn declare_stuck(&self) {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        self.stuck.store(true, Ordering::Relaxed);
    }

    /// The version the thread now runs.
    pub(crate) fn set_running(&self, version: u64) {
        self.running.store(version, Ordering::Relaxed);
    }

    pub(crate) fn running(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// What the script is doing, if it has been at it for longer than its limit plus the grace.
    fn overdue(&self, now: Instant) -> Option<(String, Duration, Duration)> {
        let d = self.lock();
        let since = d.since?;
        let took = now.saturating_duration_since(since);
        (took > d.limit + GRACE).then(|| (d.describe(), d.limit, took))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Doing> {
        self.doing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who the watchdog reports a stuck script to.
pub(crate) trait Overseer: Send + Sync + 'static {
    /// The watches of the scripts in service.
    fn watches(&self) -> Vec<Arc<Watch>>;
    /// A script was declared stuck (called once per watch).
    fn stuck(self: &Arc<Self>, watch: &Arc<Watch>, doing: String, limit: Duration, took: Duration);
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.doing.get_mut().map(|d| d.since.is_some()).unwrap_or(false) {
            BUSY.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Calls running now, in every script of the process: while none runs, a tick looks at
/// nothing (an idle agent of a thousand accounts costs the watchdog one atomic read a tick).
static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One look at an overseer's watches; false once the overseer is gone.
type Check = Box<dyn FnMut(Instant) -> bool + Send>;

/// The overseers in service (one per script host: one per account).
static CHECKS: Mutex<Vec<Check>> = Mutex::new(Vec::new());
static THREAD: std::sync::Once = std::sync::Once::new();

/// Puts an overseer under the watchdog, until it is dropped. One thread looks at every
/// overseer of the process: a thousand accounts cost one wake-up per tick, not a thousand.
pub(crate) fn spawn<O: Overseer>(overseer: Weak<O>) {
    let check: Check = Box::new(move |now| {
        let Some(o) = overseer.upgrade() else {
            return false;
        };
        for w in o.watches() {
            if w.is_stuck() {
                continue;
            }
            if let Some((doing, limit, took)) = w.overdue(now) {
                w.declare_stuck();
                o.stuck(&w, doing, limit, took);
            }
        }
        true
    });
    CHECKS.lock().unwrap_or_else(|p| p.into_inner()).push(check);
    THREAD.call_once(|| {
        let started = std::thread::Builder::new().name("ucwa-watchdog".into()).spawn(|| loop {
            std::thread::sleep(TICK);
            if BUSY.load(Ordering::Relaxed) == 0 {
                continue;
            }
            // Taken out while they run, so registering a host never waits for a check.
            let mut checks = std::mem::take(&mut *CHECKS.lock().unwrap_or_else(|p| p.into_inner()));
            let now = Instant::now();
            checks.retain_mut(|c| c(now));
            let mut all = CHECKS.lock().unwrap_or_else(|p| p.into_inner());
            checks.append(&mut all);
            *all = checks;
        });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the script watchdog thread");
        }
    });
}

/// Runs `f` on a new thread (named `name`, with a stack for deep Lua); gives up waiting after
/// `limit` plus the grace and leaves the thread behind (it cannot be stopped from outside).
/// `ended` runs on the thread once `f` has returned (also when it was given up on: the host
/// learns that a stuck load's thread is gone).
pub(crate) fn run_bounded_then<T: Send + 'static>(
    name: String,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
    ended: impl FnOnce() + Send + 'static,
) -> Result<T, Duration> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new().name(name).stack_size(STACK).spawn(move || {
        let _ended = OnDrop(Some(ended));
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return Err(Duration::ZERO);
    }
    let wait = limit + GRACE;
    rx.recv_timeout(wait).map_err(|_| wait)
}

/// Runs its function when dropped: at the end of a thread, also one that panics.
pub(crate) struct OnDrop<F: FnOnce()>(pub Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// The stack of a script's thread: Lua's own C recursion is bounded (200 levels), serde's and
/// the pattern matcher's are too; this leaves room for all of them.
pub(crate) const STACK: usize = 16 << 20;
