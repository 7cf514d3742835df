//! A sandboxed Lua state (allowlist): `table`, `string`, `math`, `utf8`, `coroutine`, and of `os`
//! only `time`, `clock` and `date`. No `io`, `package`/`require`, `debug`, `dofile`, `loadfile`,
//! `string.dump`; `load` takes text chunks only. Every state has a memory limit, and a hook
//! that stops a handler past its instruction budget or wall-clock deadline.

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, VmState};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
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
const HOOK_EVERY: u32 = 1000;

/// The running handler's budget, read by the hook (kept in the state's app data).
pub(crate) struct Budget {
    remaining: AtomicI64,
    deadline: Mutex<Option<Instant>>,
    /// Set once a limit stops the handler: protected calls re-raise, so `pcall` cannot swallow it.
    exhausted: AtomicBool,
}

impl Budget {
    fn new() -> Budget {
        Budget { remaining: AtomicI64::new(i64::MAX), deadline: Mutex::new(None), exhausted: AtomicBool::new(false) }
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

    fn check(&self) -> Result<(), &'static str> {
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

/// A fresh sandboxed state with the limits installed.
pub(crate) fn new_state(limits: &Limits) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE | StdLib::OS;
    // A few coroutines kept for reuse: every handler call runs in one (`call_async`), and
    // making a new one per call costs more than a trivial handler.
    let lua = Lua::new_with(libs, LuaOptions::new().thread_pool_size(8))?;
    lua.set_memory_limit(limits.memory_bytes)?;
    lua.set_app_data(Budget::new());
    // A global hook: a per-thread hook would miss the coroutines async handlers run in.
    lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), |lua, _debug| {
        match lua.app_data_ref::<Budget>().map(|b| b.check()) {
            Some(Err(why)) => Err(mlua::Error::runtime(why)),
            _ => Ok(VmState::Continue),
        }
    })?;
    restrict_globals(&lua)?;
    Ok(lua)
}

/// Cuts the standard library down to the allowlist and closes the ways around the limits.
fn restrict_globals(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    let exhausted = lua.create_function(|lua, ()| Ok(lua.app_data_ref::<Budget>().is_some_and(|b| b.exhausted())))?;
    g.set("__limit_hit", exhausted)?;
    lua.load(SANDBOX_PRELUDE).set_name("=sandbox").exec()?;
    Ok(())
}

/// Runs once per state, before the script, with the full (already reduced) library.
const SANDBOX_PRELUDE: &str = r#"
local os_time, os_clock, os_date = os.time, os.clock, os.date
os = { time = os_time, clock = os_clock, date = os_date }
dofile, loadfile, require, package, debug, io = nil, nil, nil, nil, nil, nil
string.dump = nil

-- Text chunks only: a precompiled (binary) chunk can break the VM's safety.
local raw_load = load
load = function(chunk, name, _mode, ...)
  if select('#', ...) > 0 then return raw_load(chunk, name, "t", ...) end
  return raw_load(chunk, name, "t")
end

-- A limit that stopped the handler cannot be caught: protected calls re-raise it.
local limit_hit = __limit_hit
__limit_hit = nil
local raw_pcall, raw_xpcall, pack, unpack = pcall, xpcall, table.pack, table.unpack
local function pass(r)
  if not r[1] and limit_hit() then error(r[2], 0) end
  return unpack(r, 1, r.n)
end
pcall = function(...) return pass(pack(raw_pcall(...))) end
xpcall = function(...) return pass(pack(raw_xpcall(...))) end
local raw_resume = coroutine.resume
coroutine.resume = function(...) return pass(pack(raw_resume(...))) end

local raw_collect = collectgarbage
collectgarbage = function(opt, ...)
  if opt == nil or opt == "collect" or opt == "count" or opt == "step" then return raw_collect(opt, ...) end
  error("collectgarbage('" .. tostring(opt) .. "') is not available to scripts", 2)
end
"#;

/// The budget of a state (for arming before a call).
pub(crate) fn budget(lua: &Lua) -> Option<mlua::AppDataRef<'_, Budget>> {
    lua.app_data_ref::<Budget>()
}
