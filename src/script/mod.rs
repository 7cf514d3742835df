//! The Lua script host: one Lua state per script, events delivered in order per script, scripts
//! in parallel, each in a sandbox with memory, instruction and wall-clock limits.
//!
//! - `sandbox.rs`: creating a state: the allowed standard library, the limits, the hook.
//! - `env.rs`: what scripts can reach (database, UCWA session, HTTP allowlist, config).
//! - `api.rs`: the `agent` table (`agent.on`, `agent.log`, `agent.json`, `agent.state`, …).
//! - `api_net.rs`: `agent.ucwa.*` and `agent.http.request`.
//! - `api_time.rs`: `agent.time` (zones, local time); `zone.rs`: the skipped and repeated hour.
//! - `hours.rs`: `agent.time.open` (business hours); `calendar.rs`: holiday iCalendar files.
//! - `api_cron.rs`: `agent.cron`, `agent.at` over `agent.after`; `cron.rs`: the expressions.
//! - `api_people.rs`: the watched contacts behind `agent.people.watch`.
//! - `state.rs`: saving `agent.state` key by key, only what changed, only what can be read back.
//! - `timers.rs`: `agent.after` and `agent.every`.
//! - `offline.rs`: offline answers for `agent.ucwa`/`agent.http` (replay, tests).
//! - `interop.rs`: events as Lua tables (cheap fields eagerly, JSON lazily).
//! - `loader.rs`: building one version of a script from its file.
//! - `output.rs`: `ScriptOutput`, the stream of what scripts did.
//! - `runner.rs`: the task that owns a script's state and runs its handlers.
//! - `pool.rs`: the Lua worker threads every script's task runs on.
//! - `trace.rs`: what each run did, kept per script (`trace` command, `/api/traces`, `tap`).
//! - `watchdog.rs`: notices a call that overran its limit in code the hook cannot stop.
//! - `host.rs`: the set of scripts; dispatch, load, reload, unload.
//! - `watch.rs`: the directory watcher behind hot reload.

pub(crate) mod api;
pub(crate) mod api_cron;
mod api_metrics;
mod api_net;
mod api_people;
mod api_time;
mod bounded;
mod calendar;
mod cron;
mod env;
mod host;
mod hours;
pub(crate) mod interop;
pub(crate) mod loader;
pub(crate) mod modules;
pub mod offline;
mod output;
mod pattern;
pub(crate) mod pool;
mod runner;
pub(crate) mod sandbox;
mod secrets;
mod state;
mod strlib;
pub(crate) mod timers;
pub mod trace;
pub mod watch;
pub(crate) mod watchdog;
pub(crate) mod zone;

pub use calendar::Calendar;
pub use env::{outbound_client, AccountInfo, Clock, Net, ScriptEnv, ScriptSettings, SessionSlot, TapGuard};
pub(crate) use host::is_script_file;
pub use host::{ScriptHost, ScriptOutput, MAX_STUCK_VERSIONS};
pub use loader::ScriptError;
pub use sandbox::Limits;
pub use watch::watch_dir;
