//! `agent.cron` and `agent.at`: jobs at wall-clock times in a zone, built on `agent.after`: each
//! job keeps one pending `agent.after` timer for its next run and arms the next one when it
//! fires, so a job belongs to the script's version like every timer (a reload cancels it).
//!
//! ```lua
//! local job = agent.cron("30 8 * * MON-FRI", {zone = "Europe/Berlin"}, function() end)
//! agent.at("17:30", {days = {"MON-FRI"}}, function() end)   -- the same as a cron "30 17 * * MON-FRI"
//! job:next()     -- epoch ms of the next run
//! job:cancel()
//! ```
//!
//! A run missed while the agent was down (or stuck) is not made up, unless the job says
//! `catch_up = true`: then its last run is kept in `agent.state._cron[<name>]`, and a job that
//! finds a missed run when it is set up runs once at once.

use super::api_time::zone_arg;
use super::cron::{Cron, WEEKDAYS};
use super::ctx::ScriptCtx;
use super::env::Clock;
use super::zone;
use jiff::tz::TimeZone;
use mlua::{Function, Lua, ObjectLike, Table, Value};
use std::sync::Mutex;

/// The longest single wait handed to `agent.after`; a later run re-arms on waking.
const MAX_WAIT: i64 = 365 * 24 * 3600 * 1000;

struct Job {
    id: u64,
    cron: Cron,
    tz: TimeZone,
    func: Function,
    /// The next run, epoch ms on the script's clock.
    next: i64,
    /// The pending `agent.after` handle (to cancel it).
    timer: Option<Table>,
    /// The `agent.state._cron` key of a catch-up job.
    catch_up: Option<String>,
}

/// A script version's jobs (kept in its state's app data).
pub(crate) struct CronJobs {
    clock: Clock,
    /// `agent.after`, as installed by `timers.rs`.
    after: Function,
    jobs: Mutex<(u64, Vec<Job>)>,
}

impl CronJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Job>)> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The earliest next run of any job (the test runner steps the clock through these).
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.lock().1.iter().map(|j| j.next).min()
    }
}

/// Arms job `id` for its next run after `from` (or now, if later).
fn arm(lua: &Lua, id: u64, from: i64) -> mlua::Result<()> {
    let next = {
        let jobs = lua.app_data_ref::<CronJobs>().expect("installed with the agent table");
        let now = jobs.clock.now_ms();
        let guard = jobs.lock();
        let Some(job) = guard.1.iter().find(|j| j.id == id) else {
            return Ok(());
        };
        job.cron.next_after(&job.tz, from.max(now)).unwrap_or(i64::MAX)
    };
    schedule(lua, id, next)
}

/// Sets job `id`'s next run to `next` (`i64::MAX`: never) and hands `agent.after` a tick for
/// it, in place of the pending one.
fn schedule(lua: &Lua, id: u64, next: i64) -> mlua::Result<()> {
    let (after, now, old) = {
        let jobs = lua.app_data_ref::<CronJobs>().expect("installed with the agent table");
        let mut guard = jobs.lock();
        let Some(job) = guard.1.iter_mut().find(|j| j.id == id) else {
            return Ok(());
        };
        job.next = next;
        (jobs.after.clone(), jobs.clock.now_ms(), job.timer.take())
    };
    if let Some(old) = old {
        old.call_method::<bool>("cancel", ())?;
    }
    if next == i64::MAX {
        return Ok(());
    }
    let tick = lua.create_async_function(move |lua, ()| async move { tick(&lua, id).await })?;
    let handle: Table = after.call(((next - now).clamp(0, MAX_WAIT), tick))?;
    if let Some(jobs) = lua.app_data_ref::<CronJobs>() {
        if let Some(job) = jobs.lock().1.iter_mut().find(|j| j.id == id) {
            job.timer = Some(handle);
        }
    }
    Ok(())
}

/// Job `id`'s timer fired: arm the next run first (so a failing job still runs tomorrow),
/// then run it, unless this was only a wake-up on the way to a run more than a year away.
async fn tick(lua: &Lua, id: u64) -> mlua::Result<()> {
    let (due, func, catch_up, now) = {
        let jobs = lua.app_data_ref::<CronJobs>().expect("installed with the agent table");
        let now = jobs.clock.now_ms();
        let mut guard = jobs.lock();
        let Some(job) = guard.1.iter_mut().find(|j| j.id == id) else {
            return Ok(());
        };
        job.timer = None;
        (job.next, job.func.clone(), job.catch_up.clone(), now)
    };
    if due > now {
        // Only a wake-up on the way: wait on for the same run.
        return schedule(lua, id, due);
    }
    arm(lua, id, due)?;
    if let Some(key) = catch_up {
        record_run(lua, &key, due)?;
    }
    func.call_async::<()>(()).await
}

/// `agent.state._cron` (made when missing).
fn cron_state(lua: &Lua) -> mlua::Result<Option<Table>> {
    let agent: Table = lua.globals().raw_get("agent")?;
    let Value::Table(state) = agent.raw_get::<Value>("state")? else {
        return Ok(None);
    };
    match state.raw_get::<Value>("_cron")? {
        Value::Table(t) => Ok(Some(t)),
        _ => {
            let t = lua.create_table()?;
            state.raw_set("_cron", &t)?;
            Ok(Some(t))
        }
    }
}

fn record_run(lua: &Lua, key: &str, at: i64) -> mlua::Result<()> {
    if let Some(t) = cron_state(lua)? {
        t.raw_set(key, at)?;
    }
    Ok(())
}

/// Adds a job and arms it; for a catch-up job, runs it once now if a run was missed since its
/// last one (and notes now as its last run the first time, so a later restart can tell).
fn add(lua: &Lua, cron: Cron, tz: TimeZone, func: Function, catch_up: Option<String>, what: &str) -> mlua::Result<u64> {
    let (id, now) = {
        let jobs = lua.app_data_ref::<CronJobs>().expect("installed with the agent table");
        let now = jobs.clock.now_ms();
        if cron.next_after(&tz, now).is_none() {
            return Err(mlua::Error::runtime(format!("{what}: the schedule never matches a day (such as 30 February)")));
        }
        let mut guard = jobs.lock();
        guard.0 += 1;
        let id = guard.0;
        guard.1.push(Job { id, cron: cron.clone(), tz: tz.clone(), func, next: i64::MAX, timer: None, catch_up: catch_up.clone() });
        (id, now)
    };
    let mut missed = false;
    if let Some(key) = &catch_up {
        if let Some(t) = cron_state(lua)? {
            match t.raw_get::<Option<f64>>(key.as_str())? {
                Some(last) => missed = cron.next_after(&tz, last as i64).is_some_and(|n| n <= now),
                None => t.raw_set(key.as_str(), now)?,
            }
        }
    }
    if missed {
        // Runs once as soon as the script's top level is done: its next run is now.
        schedule(lua, id, now)?;
    } else {
        arm(lua, id, now)?;
    }
    Ok(id)
}

/// Re-arms every job from the clock as it is now (`test.clock` moved it without time passing).
pub(crate) fn rearm_all(lua: &Lua) -> mlua::Result<()> {
    let ids: Vec<u64> = match lua.app_data_ref::<CronJobs>() {
        Some(jobs) => jobs.lock().1.iter().map(|j| j.id).collect(),
        None => return Ok(()),
    };
    for id in ids {
        arm(lua, id, i64::MIN)?;
    }
    Ok(())
}

/// The options table: `zone`, `catch_up`, `name` (the catch-up key); the rest is the caller's.
struct Options {
    tz: TimeZone,
    catch_up: bool,
    name: Option<String>,
    days: Option<Value>,
}

fn options(v: &Value, what: &str, default: &TimeZone) -> mlua::Result<Options> {
    match v {
        Value::Nil => Ok(Options { tz: default.clone(), catch_up: false, name: None, days: None }),
        Value::Table(t) => Ok(Options {
            tz: zone_arg(&t.get::<Value>("zone")?, what, default)?,
            catch_up: t.get::<Option<bool>>("catch_up")?.unwrap_or(false),
            name: t.get("name")?,
            days: Some(t.get::<Value>("days")?).filter(|d| !d.is_nil()),
        }),
        other => Err(mlua::Error::runtime(format!("{what}: options must be a table, got {}", other.type_name()))),
    }
}

/// `agent.at`'s time and days as a cron expression: `"08:30", {"MON-FRI"}` → `30 8 * * MON-FRI`.
fn at_expr(time: &str, days: Option<&Value>) -> Result<String, String> {
    let (h, m) = time
        .split_once(':')
        .filter(|(h, m)| (1..=2).contains(&h.len()) && m.len() == 2)
        .and_then(|(h, m)| Some((h.parse::<u8>().ok().filter(|h| *h < 24)?, m.parse::<u8>().ok().filter(|m| *m < 60)?)))
        .ok_or_else(|| format!("time must be \"HH:MM\" (00:00 to 23:59), got {time:?}"))?;
    let days = match days {
        None => "*".to_string(),
        Some(Value::Table(t)) => {
            let mut list = Vec::new();
            for d in t.sequence_values::<Value>() {
                match d.map_err(|e| e.to_string())? {
                    Value::String(s) => list.push(s.to_string_lossy()),
                    other => return Err(format!("days must be names such as \"MON\" or \"MON-FRI\", got a {}", other.type_name())),
                }
            }
            if list.is_empty() {
                return Err(format!("days is empty (expected names from {})", WEEKDAYS.join(", ")));
            }
            list.join(",")
        }
        Some(Value::String(s)) => s.to_string_lossy(),
        Some(other) => return Err(format!("days must be a list of names such as {{\"MON\", \"TUE\"}}, got {}", other.type_name())),
    };
    Ok(format!("{m} {h} * * {days}"))
}

/// Installs `agent.cron` and `agent.at` (after `agent.after`, which they use).
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let after: Function = agent.get("after")?;
    lua.set_app_data(CronJobs { clock: ctx.env.clock.clone(), after, jobs: Mutex::new((0, Vec::new())) });
    let default = ctx.env.settings().time_zone.clone();
    let mt = lua.create_table()?;
    let methods = lua.create_table()?;
    methods.set(
        "cancel",
        lua.create_function(|lua, this: Table| {
            let id: u64 = this.get("id")?;
            let removed = lua.app_data_ref::<CronJobs>().and_then(|jobs| {
                let mut guard = jobs.lock();
                let i = guard.1.iter().position(|j| j.id == id)?;
                Some(guard.1.remove(i))
            });
            match removed {
                Some(job) => {
                    if let Some(t) = job.timer {
                        t.call_method::<bool>("cancel", ())?;
                    }
                    Ok(true)
                }
                None => Ok(false),
            }
        })?,
    )?;
    methods.set(
        "next",
        lua.create_function(|lua, this: Table| {
            let id: u64 = this.get("id")?;
            Ok(lua.app_data_ref::<CronJobs>().and_then(|jobs| jobs.lock().1.iter().find(|j| j.id == id).map(|j| j.next)))
        })?,
    )?;
    mt.set("__index", methods)?;
    mt.set("__metatable", false)?;
    for name in ["cron", "at"] {
        let (mt, default) = (mt.clone(), default.clone());
        let f = lua.create_function(move |lua, (spec, a, b): (String, Value, Value)| {
            let what = if name == "cron" { "agent.cron(expr, [options,] fn)" } else { "agent.at(\"HH:MM\", [options,] fn)" };
            let (opts, func) = match (a, b) {
                (Value::Function(f), Value::Nil) => (Value::Nil, f),
                (opts, Value::Function(f)) => (opts, f),
                (a, b) => return Err(mlua::Error::runtime(format!("{what}: expected a function, got {} and {}", a.type_name(), b.type_name()))),
            };
            let o = options(&opts, what, &default)?;
            let expr = if name == "cron" {
                if o.days.is_some() {
                    return Err(mlua::Error::runtime(format!("{what}: days is agent.at's option; put the days in the expression")));
                }
                spec
            } else {
                at_expr(&spec, o.days.as_ref()).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?
            };
            let cron = Cron::parse(&expr).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
            let key = o.catch_up.then(|| o.name.clone().unwrap_or_else(|| format!("{expr} {}", zone::name(&o.tz))));
            let id = add(lua, cron, o.tz, func, key, what)?;
            let handle = lua.create_table()?;
            handle.set("id", id)?;
            handle.set_metatable(Some(mt.clone()))?;
            Ok(handle)
        })?;
        agent.set(name, f)?;
    }
    Ok(())
}
