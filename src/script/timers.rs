//! `agent.after(ms, fn)` and `agent.every(ms, fn)`: timers that belong to one version of a
//! script. They live in that version's Lua state, so a reload (which drops the old state)
//! cancels them: they cannot double.
//!
//! ```lua
//! local t = agent.every(60000, function() agent.log.info("still here") end)
//! t:cancel()
//! ```
//!
//! A pending timer is held in Rust, outside Lua's allocator: each one counts `TIMER_BYTES`
//! against the script's memory limit (the limit of its Lua state is lowered by that much), so
//! timers and Lua memory together stay within `scripts.memory_limit_mb`. A timer past it is an
//! error naming the limit.

use super::ctx::ScriptCtx;
use super::env::Clock;
use mlua::{Function, Lua, Table};
use std::sync::Mutex;

/// The shortest repeat interval in ms (a tighter loop would only burn the script's budget).
const MIN_EVERY: i64 = 10;
/// The longest delay in ms: 366 days (far enough for any schedule; far from overflowing).
const MAX_DELAY: i64 = 366 * 24 * 3600 * 1000;

/// What one pending timer costs outside Lua's allocator, at most: its entry in the list (which
/// may have twice the room it uses), the sort's scratch space and its place among the timers
/// taken to fire. (Its function, and the handle the script gets, are Lua's and counted there.)
pub(crate) const TIMER_BYTES: usize = 4 * std::mem::size_of::<Timer>();

struct Timer {
    id: u64,
    /// On the script's clock, in ms since the epoch.
    due: i64,
    every: Option<i64>,
    func: Function,
}

/// A script version's timers (kept in its state's app data), on the script's clock.
pub(crate) struct Timers {
    clock: Clock,
    list: Mutex<(u64, Vec<Timer>)>,
}

impl Timers {
    /// When the next timer is due, on the tokio clock (for the runner to sleep until).
    pub(crate) fn next_due(&self) -> Option<tokio::time::Instant> {
        let due = self.lock().1.iter().map(|t| t.due).min()?;
        let wait = (due - self.clock.now_ms()).max(0) as u64;
        Some(tokio::time::Instant::now() + std::time::Duration::from_millis(wait))
    }

    /// Takes the timers due now, rescheduling repeating ones; in due order.
    pub(crate) fn take_due(&self) -> Vec<Function> {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let list = &mut guard.1;
        list.sort_by_key(|t| (t.due, t.id));
        let mut fire = Vec::new();
        list.retain_mut(|t| {
            if t.due > now {
                return true;
            }
            fire.push(t.func.clone());
            match t.every {
                Some(every) => {
                    t.due = (t.due + every).max(now + MIN_EVERY);
                    true
                }
                None => false,
            }
        });
        fire
    }

    fn add(&self, delay: i64, every: Option<i64>, func: Function) -> u64 {
        let due = self.clock.now_ms() + delay;
        let mut guard = self.lock();
        guard.0 += 1;
        let id = guard.0;
        guard.1.push(Timer { id, due, every, func });
        id
    }

    fn pending(&self) -> usize {
        self.lock().1.len()
    }

    fn cancel(&self, id: u64) -> bool {
        let mut guard = self.lock();
        let before = guard.1.len();
        guard.1.retain(|t| t.id != id);
        guard.1.len() != before
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Timer>)> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Charges the pending timers to the state's memory limit: Lua may use what they leave of it.
/// Called whenever the number of pending timers changes.
pub(crate) fn charge(lua: &Lua) {
    let limit = super::bounded::memory_limit(lua);
    if limit == usize::MAX {
        return;
    }
    let pending = lua.app_data_ref::<Timers>().map_or(0, |t| t.pending());
    let _ = lua.set_memory_limit(limit.saturating_sub(pending.saturating_mul(TIMER_BYTES)).max(1));
}

/// Installs `agent.after` and `agent.every` in `agent`, on the script's clock.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let clock = ctx.env.clock.clone();
    lua.set_app_data(Timers { clock, list: Mutex::new((0, Vec::new())) });
    let handle_mt = lua.create_table()?;
    let methods = lua.create_table()?;
    methods.set(
        "cancel",
        lua.create_function(|lua, this: Table| {
            let id: u64 = this.get("id")?;
            let cancelled = lua.app_data_ref::<Timers>().is_some_and(|t| t.cancel(id));
            charge(lua);
            if cancelled {
                super::trace::record(lua, |at_us| super::trace::Step::Timer { at_us, op: "cancel".into(), id, ms: None, every: false });
            }
            Ok(cancelled)
        })?,
    )?;
    handle_mt.set("__index", methods)?;
    handle_mt.set("__metatable", false)?;
    for (name, repeat) in [("after", false), ("every", true)] {
        let mt = handle_mt.clone();
        let f = lua.create_function(move |lua, (ms, func): (f64, Function)| {
            if !(ms.is_finite() && ms >= 0.0 && ms <= MAX_DELAY as f64) {
                return Err(mlua::Error::runtime(format!("agent.{name}(ms, fn): ms must be between 0 and {MAX_DELAY} (366 days), got {ms}")));
            }
            let d = ms.round() as i64;
            if repeat && d < MIN_EVERY {
                return Err(mlua::Error::runtime(format!("agent.every(ms, fn): ms must be at least {MIN_EVERY}")));
            }
            let limit = super::bounded::memory_limit(lua);
            let timers = lua.app_data_ref::<Timers>().expect("installed with the agent table");
            let pending = timers.pending() + 1;
            let held = pending.saturating_mul(TIMER_BYTES);
            let used = lua.used_memory();
            if used.saturating_add(held) > limit {
                return Err(mlua::Error::runtime(format!(
                    "agent.{name}: memory limit exceeded (scripts.memory_limit_mb = {} MiB) by pending timers: {pending} timers would hold {held} bytes ({TIMER_BYTES} each) besides the script's {used} bytes of Lua memory; cancel timers or let them fire",
                    limit >> 20
                )));
            }
            let id = timers.add(d, repeat.then_some(d), func);
            drop(timers);
            super::ctx::note_change(lua);
            charge(lua);
            super::trace::record(lua, |at_us| super::trace::Step::Timer { at_us, op: "set".into(), id, ms: Some(d), every: repeat });
            let handle = lua.create_table()?;
            handle.set("id", id)?;
            handle.set_metatable(Some(mt.clone()))?;
            Ok(handle)
        })?;
        agent.set(name, f)?;
    }
    Ok(())
}
