//! The `agent` table scripts see. Usage from Lua:
//!
//! ```lua
//! local h = agent.on("audioVideoSession", "added", function(e) agent.log.info("call started", {href = e.href}) end)
//! agent.on("*", function(e) end)          -- every event
//! h:off()                                  -- unsubscribe
//! agent.log.warn("message", {key = "value"})
//! local s = agent.json.encode({a = 1}); local t = agent.json.decode(s)
//! agent.now()                              -- milliseconds since the Unix epoch
//! agent.script.name, agent.script.version
//! agent.state.calls = (agent.state.calls or 0) + 1   -- kept across reloads and restarts
//! agent.config.webhook                     -- [scripts.config.<name>] from config.toml
//! agent.on_unload(function() end)          -- runs before this version is replaced or removed
//! ```
//! Each area of the table is one file with one `register(lua, agent, ctx)`, listed once in
//! `AREAS` (as WezTerm lists its lua-api-crates in one place); an area imports the shared nouns
//! (`ctx.rs`), never another area.
//!
//! The two largest areas are installed at first use (`api_lazy`): agent-actions (about 40 KiB
//! of Lua per state) and `agent.ucwa`/`agent.http` (about 10 KiB), while an agent of many
//! accounts holds a state per script per account, most of them never calling either.

use super::ctx::{CurrentEvent, OnUnload, Register, ScriptCtx, Subscriptions};
use super::{api_actions, api_agent, api_cron, api_lazy, api_metrics, api_net, api_state, api_time, hours, timers};
use mlua::{Lua, Table};

/// Every area, in the order they are installed (`agent.cron` uses `agent.after`, agent-actions
/// `agent.ucwa`), and the sub-tables of `agent` an area installed at first use fills (none:
/// installed with the state).
pub(crate) const AREAS: &[(&str, Register, &[&str])] = &[
    ("agent.after, agent.every", timers::register, &[]),
    ("agent.ucwa, agent.http", api_net::register, &["ucwa", "http"]),
    ("agent.metrics", api_metrics::register, &[]),
    ("agent.time", api_time::register, &[]),
    ("agent.time.open", hours::register, &[]),
    ("agent.cron, agent.at", api_cron::register, &[]),
    ("agent.me, agent.calls, agent.im, agent.people (agent-actions)", api_actions::register, api_actions::TABLES),
    ("agent.state", api_state::register, &[]),
    ("agent.on, on_unload, log, json, config, now, account, script; print", api_agent::register, &[]),
];

/// Installs the `agent` table (and `print`, which logs at info).
pub(crate) fn register(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<()> {
    lua.set_app_data(Subscriptions::default());
    lua.set_app_data(OnUnload::default());
    lua.set_app_data(CurrentEvent::default());
    super::trace::install(lua);
    super::interop::Interop::install(lua)?;
    let agent = lua.create_table()?;
    let lazy = api_lazy::Lazy::new(lua, ctx)?;
    api_actions::keep_globals(lua)?;
    api_net::keep_globals(lua)?;
    for (_, register, tables) in AREAS {
        if tables.is_empty() {
            register(lua, &agent, ctx)?;
        } else {
            lazy.add(lua, &agent, *register, tables)?;
        }
    }
    lazy.seal(&agent)?;
    // agent-actions also fills in fields of message events: the first such read installs it.
    let me: Table = agent.raw_get(api_actions::TABLES[0])?;
    super::interop::set_field_hook_installer(lua, lazy.installer_of(lua, &me)?)?;
    lua.globals().set("agent", agent)?;
    Ok(())
}
