//! What a script may spend: the limits of `[scripts]` and the running call's budget, which the
//! sandbox's hook and the Rust code working on a script's behalf (patterns, JSON, bodies) both
//! draw on.

use mlua::Lua;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-script limits, from `[scripts]` in config.toml.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    /// Lua VM instructions per handler call (and for the script's top level).
    pub instructions: u64,
    /// Wall-clock time per handler call, awaiting included.
    pub handler_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 64 << 20, instructions: 50_000_000, handler_timeout: Duration::from_secs(10) }
    }
}

/// How often (in VM instructions) the hook checks the budget.
pub(crate) const HOOK_EVERY: u32 = 1000;

/// The running handler's budget, read by the hook (kept in the state's app data, in an `Arc`).
pub(crate) struct Budget {
    remaining: AtomicI64,
    deadline: Mutex<Option<Instant>>,
    /// Set once a limit stops the handler: protected calls re-raise, so `pcall` cannot swallow it.
    exhausted: AtomicBool,
    /// The state's memory limit (for work done outside Lua's allocator, such as `gsub`'s result).
    memory_limit: usize,
}

impl Budget {
    pub(crate) fn new(memory_limit: usize) -> Budget {
        Budget { remaining: AtomicI64::new(i64::MAX), deadline: Mutex::new(None), exhausted: AtomicBool::new(false), memory_limit }
    }

    /// Instructions left to the running call (work done in Rust on its behalf spends them too).
    pub(crate) fn available(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed).max(0) as u64
    }

    /// Takes `n` instructions' worth of work from the running call's budget.
    pub(crate) fn spend(&self, n: u64) {
        self.remaining.fetch_sub(n.min(i64::MAX as u64) as i64, Ordering::Relaxed);
    }

    /// A limit stopped the call (in Rust code the hook does not see).
    pub(crate) fn exhaust(&self) {
        self.exhausted.store(true, Ordering::Relaxed);
    }

    /// The running call's wall-clock deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().expect("budget lock")
    }

    pub(crate) fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// Arms the budget for one call.
    pub(crate) fn arm(&self, limits: &Limits) {
        self.arm_from(limits, Instant::now());
    }

    /// Arms the budget for one call that started at `started`.
    pub(crate) fn arm_from(&self, limits: &Limits, started: Instant) {
        self.remaining.store(limits.instructions.min(i64::MAX as u64) as i64, Ordering::Relaxed);
        *self.deadline.lock().expect("budget lock") = Some(started + limits.handler_timeout);
        self.exhausted.store(false, Ordering::Relaxed);
    }

    /// Whether the last call was stopped by a limit.
    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// What the hook asks every `HOOK_EVERY` instructions: may the call go on?
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.exhausted() {
            return Err("script stopped: limit reached");
        }
        if self.remaining.fetch_sub(HOOK_EVERY as i64, Ordering::Relaxed) < HOOK_EVERY as i64 {
            self.exhausted.store(true, Ordering::Relaxed);
            return Err("instruction limit exceeded (scripts.instruction_limit)");
        }
        if self.deadline.lock().expect("budget lock").is_some_and(|d| Instant::now() > d) {
            self.exhausted.store(true, Ordering::Relaxed);
            return Err("time limit exceeded (scripts.handler_timeout_ms)");
        }
        Ok(())
    }
}

/// The budget of a state (for arming before a call).
pub(crate) fn budget(lua: &Lua) -> Option<mlua::AppDataRef<'_, Arc<Budget>>> {
    lua.app_data_ref::<Arc<Budget>>()
}
