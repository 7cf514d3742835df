//! The Lua script host: one Lua state per script, events delivered in order per script, scripts
//! in parallel, each in a sandbox with memory, instruction and wall-clock limits.
//!
//! - `budget.rs`: the limits of `[scripts]` and the running call's budget.
//! - `sandbox.rs`: creating a state: the allowed standard library, the limits, the hook;
//!   `pattern.rs`, `strlib.rs`: `string.find/match/gmatch/gsub` in Rust on that budget.
//! - `env.rs`: what scripts can reach (database, UCWA session, HTTP allowlist, config).
//! - `ctx.rs`: what every API area shares: `ScriptCtx`, subscriptions, the current event.
//! - `api.rs`: the `agent` table: the one list of its areas (`AREAS`), each a file with one
//!   `register(lua, agent, ctx)`:
//! - `api_agent.rs`: `agent.on`, `agent.on_unload`, `agent.log`, `agent.json`, `agent.config`, …
//! - `api_state.rs`: `agent.state`, loaded, merged at the swap, serialised for commits.
//! - `api_actions.rs`: agent-actions (`actions.lua`): `agent.me`, `agent.calls`, `agent.im`,
//!   `agent.people`.
//! - `api_metrics.rs`: `agent.metrics`.
//! - `api_net.rs`: `agent.ucwa.*` and `agent.http.request`.
//! - `api_time.rs`: `agent.time` (zones, local time); `zone.rs`: the skipped and repeated hour.
//! - `hours.rs`: `agent.time.open` (business hours); `calendar.rs`: holiday iCalendar files.
//! - `api_cron.rs`: `agent.cron`, `agent.at` over `agent.after`; `cron.rs`: the expressions.
//! - `api_people.rs`: the watched contacts behind `agent.people.watch`.
//! - `state.rs`: saving `agent.state` key by key, only what changed, only what can be read back.
//! - `timers.rs`: `agent.after` and `agent.every`.
//! - `offline.rs`: offline answers for `agent.ucwa`/`agent.http` (replay, tests);
//!   `offline_env.rs`: the offline environment built on them (replay, test, check, dry run).
//! - `interop.rs`: events as Lua tables (cheap fields eagerly, JSON lazily).
//! - `dispatch.rs`: a run of events through a script's handlers in one entry into Lua.
//! - `bounded.rs`: JSON built from script values under the memory limit.
//! - `modules.rs`: `require` from `<scripts dir>/lib/`; `secrets.rs`: secret config values.
//! - `loader.rs`: building one version of a script from its file.
//! - `output.rs`: `ScriptOutput`, the stream of what scripts did; `log_budget.rs`: how many lines
//!   a script may log.
//! - `runner.rs`: the task that owns a script's state and runs its handlers; `pending.rs`: a
//!   run's trace until it is written.
//! - `pool.rs`: the Lua worker threads every script's task runs on.
//! - `board.rs`: each script's pause and last error, for the console.
//! - `manual.rs`: a script driven by its caller on the same runner (`ucwa-agent test`).
//! - `trace.rs`: what each run did, kept per script (`trace` command, `/api/traces`, `tap`);
//!   `location.rs`: an error's `file.lua:line`.
//! - `watchdog.rs`: notices a call that overran its limit in code the hook cannot stop.
//! - `host.rs`: the set of scripts; dispatch, load, reload, unload.
//! - `watch.rs`: the directory watcher behind hot reload.

mod api;
mod api_actions;
mod api_agent;
mod api_cron;
mod api_lazy;
mod api_metrics;
mod api_net;
mod api_people;
mod api_state;
mod api_time;
pub mod board;
mod bounded;
pub(crate) mod budget;
mod calendar;
mod cron;
pub(crate) mod ctx;
mod dispatch;
mod env;
mod host;
mod hours;
mod interop;
mod loader;
pub(crate) mod location;
mod log_budget;
pub(crate) mod manual;
mod modules;
pub mod offline;
pub(crate) mod offline_env;
mod output;
mod pattern;
mod pending;
pub(crate) mod pool;
mod runner;
mod sandbox;
mod secrets;
mod state;
mod strlib;
pub(crate) mod tbc;
mod timers;
pub mod trace;
pub mod watch;
mod watchdog;
pub(crate) mod zone;

pub use api_people::{DURATION_MINUTES, MAX_WATCHED};
pub use budget::Limits;
pub use calendar::Calendar;
pub use env::{outbound_client, AccountInfo, Clock, Net, ScriptEnv, ScriptSettings, SessionSlot, TapGuard};
pub(crate) use host::{is_script_file, not_a_script_file};
pub use host::{ScriptHost, ScriptOutput, MAX_STUCK_VERSIONS};
pub use loader::ScriptError;
pub use log_budget::LogRate;
pub use watch::watch_dir;

// What `tools` uses besides the above (the modules themselves stay private): `check` loads each
// script as `run` does and walks a bare `agent` table; `test` drives a version (`manual`).
pub(crate) use api_lazy::install_all as install_all_areas;
pub(crate) use loader::{build as build_state, load_bounded};
