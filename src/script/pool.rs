//! The Lua workers: a fixed number of OS threads (`scripts.workers`, default one per CPU) run
//! every script of the process, instead of one thread per script.
//!
//! Each script is one task: its `runner::run` future, polled by one worker at a time, so a
//! script still runs one event at a time, in order. A task that waits (for its inbox, a timer,
//! an HTTP request on the agent's runtime) gives its worker back; its waker puts it on the one
//! run queue all workers take from, so no task is tied to a worker: whichever is free runs it.
//!
//! A worker stuck in a call that no limit can stop (C code: a long `string.rep`, a finalizer)
//! is the watchdog's to find, as before: once it declares the script stuck, the host calls `abandon`, which leaves
//! that worker to its call and starts a new one in its place, so the pool keeps its size and
//! the other scripts' tasks (still on the queue, none held by the stuck thread) carry on. The
//! stuck thread ends when its call returns (the script's task then ends too).
//!
//! Timers (`agent.after`, the cursor's flush, a handler's time limit) run on a small runtime of
//! the pool's own (one thread, time only), on the system clock whatever the agent's runtime is.
//!
//! A task that keeps finding work (a burst of events, a timer always due) lets the others have
//! the worker between two events once it has run for `SLICE` (`share`).

use super::watchdog::{OnDrop, Watch, STACK};
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How long a task may keep its worker while it has work, before it lets the tasks waiting
/// for a worker run (between two events: a call is never cut).
const SLICE: Duration = Duration::from_millis(2);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A task's place in its life: waiting to be woken, on the run queue, being polled (and woken
/// meanwhile), or ended. The state makes sure one worker at most polls a task at a time.
const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
const RUNNING_WOKEN: u8 = 3;
const DONE: u8 = 4;

/// One script's task.
struct Task {
    state: AtomicU8,
    /// The script's future (`None` once it ended). Only the worker that set `RUNNING` locks it.
    job: Mutex<Option<Job>>,
    /// Whose task this is, for the watchdog's verdict (`abandon`).
    watch: Arc<Watch>,
    pool: Arc<Shared>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (next, queue) = match s {
                IDLE => (QUEUED, true),
                RUNNING => (RUNNING_WOKEN, false),
                _ => return, // queued already, woken already, or ended
            };
            match self.state.compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if queue {
                        self.pool.push(self.clone());
                    }
                    return;
                }
                Err(now) => s = now,
            }
        }
    }
}

/// One worker thread.
struct Worker {
    /// The task it is polling now (its watch), so that `abandon` finds the worker of a stuck script.
    polling: Mutex<Option<Arc<Watch>>>,
    /// Given up on by the watchdog and replaced: it ends once its poll returns.
    lost: AtomicBool,
    /// Its thread's id (0 until it runs), to rename it after the script it is stuck in.
    tid: AtomicI32,
}

/// What the workers share.
struct Shared {
    queue: Mutex<VecDeque<Arc<Task>>>,
    ready: Condvar,
    /// The workers in service (not the lost ones).
    workers: Mutex<Vec<Arc<Worker>>>,
    /// The runtime the tasks' timers run on.
    timers: tokio::runtime::Handle,
    /// Workers started so far (their threads' names).
    started: AtomicUsize,
}

impl Shared {
    fn push(&self, task: Arc<Task>) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(task);
        self.ready.notify_one();
    }

    fn start_worker(self: &Arc<Self>) -> std::io::Result<()> {
        let worker = Arc::new(Worker { polling: Mutex::new(None), lost: AtomicBool::new(false), tid: AtomicI32::new(0) });
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        // (In the list before it can take a task, so that `abandon` finds it in any call.)
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).push(worker.clone());
        let (shared, w) = (self.clone(), worker.clone());
        if let Err(e) = std::thread::Builder::new().name(format!("lua-worker-{n}")).stack_size(STACK).spawn(move || shared.work(&w)) {
            self.workers.lock().unwrap_or_else(|p| p.into_inner()).retain(|w| !Arc::ptr_eq(w, &worker));
            return Err(e);
        }
        Ok(())
    }

    /// A worker's life: take a task, poll it, until it is lost.
    fn work(self: &Arc<Self>, me: &Arc<Worker>) {
        // SAFETY: gettid has no preconditions.
        me.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        let _timers = self.timers.enter();
        loop {
            let task = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(t) = queue.pop_front() {
                        break t;
                    }
                    queue = self.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
            };
            *me.polling.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.watch.clone());
            poll(&task);
            *me.polling.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if me.lost.load(Ordering::Acquire) {
                tracing::info!(script = %task.watch.name, "a Lua worker given up on as stuck returned from its call; its thread ends");
                return;
            }
        }
    }
}

/// Polls a queued task once, then queues it again if it was woken meanwhile.
fn poll(task: &Arc<Task>) {
    task.state.store(RUNNING, Ordering::Release);
    let waker = Waker::from(task.clone());
    let mut cx = Context::from_waker(&waker);
    let ended = {
        let mut job = task.job.lock().unwrap_or_else(|p| p.into_inner());
        let Some(fut) = job.as_mut() else {
            task.state.store(DONE, Ordering::Release);
            return;
        };
        SLICE_STARTED.set(Some(Instant::now()));
        // A panic escaping the script's future (a bug of ours) ends that task, not the worker.
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)));
        SLICE_STARTED.set(None);
        let ended = !matches!(polled, Ok(Poll::Pending));
        if let Err(panic) = &polled {
            let text = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            tracing::error!(script = %task.watch.name, panic = %text, "internal error of the agent (please report it): the script's task panicked and ended");
        }
        if ended {
            // (Dropped here, on a worker: its `on_end` runs now.)
            *job = None;
        }
        ended
    };
    if ended {
        task.state.store(DONE, Ordering::Release);
    } else if task.state.compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_err() {
        // Woken while it ran: back on the queue, behind the others.
        task.state.store(QUEUED, Ordering::Release);
        task.pool.push(task.clone());
    }
}

thread_local! {
    /// When the task this worker polls was taken up (none off the workers).
    static SLICE_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// When the task this worker polls is to let the others have the worker (`share`; `None` off
/// the pool). A run of events dispatched in one entry into Lua stops at the first event after it.
pub(crate) fn slice_end() -> Option<Instant> {
    SLICE_STARTED.get().map(|t| t + SLICE)
}

/// Between two events: once the task has had its worker for `SLICE`, goes to the back of the
/// run queue so the scripts waiting for a worker run. A no-op off the pool.
pub(crate) async fn share() {
    let over = SLICE_STARTED.get().is_some_and(|t| t.elapsed() >= SLICE);
    if over {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    }
}

/// The number of workers asked for (0: one per CPU), until the pool starts.
static WANTED: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<std::io::Result<Arc<Shared>>> = OnceLock::new();

/// Sets how many workers the pool has (`scripts.workers`; 0: one per CPU). Only before the
/// first script starts: the pool keeps the size it started with.
pub(crate) fn configure(workers: usize) {
    WANTED.store(workers, Ordering::Relaxed);
}

/// How many workers the pool starts with.
pub(crate) fn size() -> usize {
    match WANTED.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn pool() -> std::io::Result<&'static Arc<Shared>> {
    let started = POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The timers' runtime: one thread that sleeps until the next timer is due.
        std::thread::Builder::new().name("lua-timers".into()).spawn(move || match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => {
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })?;
        let timers = rx.recv().map_err(std::io::Error::other)??;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            timers,
            started: AtomicUsize::new(0),
        });
        let n = size();
        for _ in 0..n {
            shared.start_worker()?;
        }
        tracing::debug!(workers = n, "Lua worker pool started");
        Ok(shared)
    });
    started.as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
}

/// Runs a script's future on the pool; `on_end` runs once it has ended (or panicked).
pub(crate) fn spawn(watch: Arc<Watch>, fut: impl Future<Output = ()> + Send + 'static, on_end: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let pool = pool()?;
    let job: Job = Box::pin(async move {
        let _on_end = OnDrop(Some(on_end));
        fut.await;
    });
    let task = Arc::new(Task { state: AtomicU8::new(QUEUED), job: Mutex::new(Some(job)), watch, pool: pool.clone() });
    pool.push(task);
    Ok(())
}

/// The watchdog declared `watch`'s script stuck: if a worker is in its call, that worker is
/// left to it and a new one takes its place.
pub(crate) fn abandon(watch: &Arc<Watch>) {
    let Some(Ok(pool)) = POOL.get() else {
        return;
    };
    let mut workers = pool.workers.lock().unwrap_or_else(|p| p.into_inner());
    // (Marked under `polling`'s lock, which the worker takes as its poll returns: either it is
    // still in the call and ends once out of it, or it has returned and stays in service.)
    let in_call = |w: &Arc<Worker>| {
        let polling = w.polling.lock().unwrap_or_else(|p| p.into_inner());
        let stuck = polling.as_ref().is_some_and(|p| Arc::ptr_eq(p, watch));
        if stuck {
            w.lost.store(true, Ordering::Release);
        }
        stuck
    };
    let Some(i) = workers.iter().position(in_call) else {
        return; // not on a worker now: its task sees the verdict when next polled
    };
    let lost = workers.swap_remove(i);
    drop(workers);
    name_after(&lost, &watch.name);
    tracing::warn!(script = %watch.name, "a Lua worker is stuck in the script's call; a new worker takes its place");
    if let Err(error) = pool.start_worker() {
        tracing::error!(%error, "cannot start a Lua worker in place of a stuck one");
    }
}

/// Names a stuck worker's thread `lua:<script>` (what `ps -L`, `top -H` show; 15 bytes at
/// most), so that the thread a stuck script holds says whose it is.
fn name_after(w: &Worker, script: &str) {
    let tid = w.tid.load(Ordering::Relaxed);
    let mut name = format!("lua:{script}");
    while name.len() > 15 {
        name.pop();
    }
    if tid != 0 {
        // (Best effort: the name is for people reading the process's threads.)
        let _ = std::fs::write(format!("/proc/self/task/{tid}/comm"), name);
    }
}
