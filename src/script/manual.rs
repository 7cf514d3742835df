//! A script driven by its caller, the surface `ucwa-agent test` uses: one state built as the
//! loader builds a version (`ScriptHost::drive`), into which the caller's own Lua (a test file)
//! loads the script under test. The caller feeds events in and moves the clock; each handler,
//! timer and commit runs through the runner's calls as in `run` (`runner::Driven`): the limits
//! armed per call, the host's watchdog watching, the cursor and `agent.state` committed after
//! each event, errors worded and redacted alike. Requests go through the same `agent.ucwa` /
//! `agent.http` path as in `run`, answered offline (`offline.rs`).

use super::api_cron::{self, CronJobs};
use super::budget;
use super::env::Clock;
use super::runner::Driven;
use crate::ucwa::Event;
use mlua::Lua;

pub(crate) use super::interop::event_table;
pub(crate) use super::loader::describe;
/// The stack of a thread Lua runs on (deep Lua, serde and the pattern matcher).
pub(crate) use super::watchdog::STACK as THREAD_STACK;

/// Runs the handlers `ev` matches (all of them, as `run` does), then commits; raises the first
/// error a handler, or the commit of `agent.state`, reported.
pub(crate) async fn dispatch(lua: &Lua, ev: Event) -> mlua::Result<()> {
    let errors = Driven::event(lua, ev).await;
    rearm(lua);
    first_error(errors?)
}

/// Moves `clock` forward by `ms`, stopping at each `agent.cron`/`agent.at` run on the way (a
/// day's advance runs a daily job once per day, each at its own time), and fires the timers
/// that fall due at each stop; raises the first error a timer reported, at the stop it failed.
pub(crate) async fn advance(lua: &Lua, clock: &Clock, ms: i64) -> mlua::Result<()> {
    let end = clock.now_ms().saturating_add(ms.max(0));
    loop {
        let now = clock.now_ms();
        let step = lua.app_data_ref::<CronJobs>().and_then(|j| j.next_due()).filter(|d| *d > now && *d < end);
        clock.advance(step.unwrap_or(end) - now);
        let errors = Driven::timers(lua).await;
        rearm(lua);
        first_error(errors?)?;
        if step.is_none() {
            return Ok(());
        }
    }
}

/// Sets a manual clock to `ms` since the epoch: nothing runs; schedules re-arm from it.
pub(crate) fn set_clock(lua: &Lua, clock: &Clock, ms: i64) -> mlua::Result<()> {
    if let Clock::Manual(now) = clock {
        now.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    api_cron::rearm_all(lua)
}

/// A fresh budget (instructions and time) for the caller's own code: a test case, and what it
/// runs after a handler spent the budget of its call.
pub(crate) fn rearm(lua: &Lua) {
    let limits = lua.app_data_ref::<Driven>().map(|d| d.limits());
    if let (Some(b), Some(limits)) = (budget::budget(lua), limits) {
        b.arm(&limits);
    }
}

fn first_error(errors: Vec<String>) -> mlua::Result<()> {
    match errors.into_iter().next() {
        Some(e) => Err(mlua::Error::runtime(e)),
        None => Ok(()),
    }
}
