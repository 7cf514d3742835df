//! `agent.after(ms, fn)` and `agent.every(ms, fn)`: timers that belong to one version of a
//! script. They live in that version's Lua state, so a reload (which drops the old state)
//! cancels them: they cannot double.
//!
//! ```lua
//! local t = agent.every(60000, function() agent.log.info("still here") end)
//! t:cancel()
//! ```

use mlua::{Function, Lua, Table};
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

/// The shortest repeat interval (a tighter loop would only burn the script's budget).
const MIN_EVERY: Duration = Duration::from_millis(10);

struct Timer {
    id: u64,
    due: Instant,
    every: Option<Duration>,
    func: Function,
}

/// A script version's timers (kept in its state's app data).
#[derive(Default)]
pub(crate) struct Timers {
    list: Mutex<(u64, Vec<Timer>)>,
}

impl Timers {
    /// When the next timer is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lock().1.iter().map(|t| t.due).min()
    }

    /// Takes the timers due at `now`, rescheduling repeating ones; in due order.
    pub(crate) fn take_due(&self, now: Instant) -> Vec<Function> {
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

    fn add(&self, delay: Duration, every: Option<Duration>, func: Function) -> u64 {
        let mut guard = self.lock();
        guard.0 += 1;
        let id = guard.0;
        guard.1.push(Timer { id, due: Instant::now() + delay, every, func });
        id
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

/// Installs `agent.after` and `agent.every` in `agent`.
pub(crate) fn register(lua: &Lua, agent: &Table) -> mlua::Result<()> {
    lua.set_app_data(Timers::default());
    let handle_mt = lua.create_table()?;
    let methods = lua.create_table()?;
    methods.set(
        "cancel",
        lua.create_function(|lua, this: Table| {
            let id: u64 = this.get("id")?;
            Ok(lua.app_data_ref::<Timers>().is_some_and(|t| t.cancel(id)))
        })?,
    )?;
    handle_mt.set("__index", methods)?;
    for (name, repeat) in [("after", false), ("every", true)] {
        let mt = handle_mt.clone();
        let f = lua.create_function(move |lua, (ms, func): (f64, Function)| {
            if !(ms.is_finite() && ms >= 0.0) {
                return Err(mlua::Error::runtime(format!("agent.{name}(ms, fn): ms must be a non-negative number")));
            }
            let d = Duration::from_secs_f64(ms / 1000.0);
            if repeat && d < MIN_EVERY {
                return Err(mlua::Error::runtime(format!("agent.every(ms, fn): ms must be at least {}", MIN_EVERY.as_millis())));
            }
            let id = lua.app_data_ref::<Timers>().expect("installed with the agent table").add(d, repeat.then_some(d), func);
            let handle = lua.create_table()?;
            handle.set("id", id)?;
            handle.set_metatable(Some(mt.clone()))?;
            Ok(handle)
        })?;
        agent.set(name, f)?;
    }
    Ok(())
}
