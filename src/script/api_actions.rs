//! `agent.me`, `agent.calls`, `agent.im` and `agent.people`: written in Lua (`actions.lua`) over
//! `agent.ucwa`, with what fills in `e.text`, `e.from`, `e.direction` of message events.

use super::ctx::ScriptCtx;
use mlua::{Function, Lua, Table};

/// The tables of `agent` agent-actions fills (installed at first use: `api_lazy`).
pub(crate) const TABLES: &[&str] = &["me", "calls", "im", "people"];

/// Where the globals agent-actions takes are kept as the state was built.
const GLOBALS: &str = "ucwa.actions_globals";

/// The globals agent-actions takes, kept when the state is built: it is installed at first
/// use, after the script's top level, which may have reassigned them in its own globals.
const TAKE_GLOBALS: &str = "return { type = type, error = error, tostring = tostring, pcall = pcall, ipairs = ipairs, \
  pairs = pairs, setmetatable = setmetatable, tonumber = tonumber, string = { format = string.format, byte = string.byte, \
  char = string.char }, math = { random = math.random }, coroutine = { isyieldable = coroutine.isyieldable } }";

/// Keeps the globals agent-actions will take (before the script runs).
pub(crate) fn keep_globals(lua: &Lua) -> mlua::Result<()> {
    let globals: Table = lua.load(TAKE_GLOBALS).set_name("=agent").call(())?;
    lua.set_named_registry_value(GLOBALS, globals)
}

/// Runs agent-actions over `agent`, with the globals as they were when the state was built.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let globals: Table = lua.named_registry_value(GLOBALS)?;
    let event_field: Function = lua.load(include_str!("actions.lua")).set_name("@agent-actions").set_environment(globals).call((
        agent.clone(),
        lua.create_function(|lua, ()| Ok(user_level(lua)))?,
        super::api_people::native(lua, ctx)?,
    ))?;
    super::interop::set_field_hook(lua, event_field)
}

/// For `error(message, level)` in agent-actions: the level of the first frame that is the
/// script's (not agent-actions, not Rust, not mlua's own chunks), counted from the caller; 1
/// (the caller) when there is none.
fn user_level(lua: &Lua) -> usize {
    (1..64)
        .map_while(|level| {
            lua.inspect_stack(level, |d| {
                let s = d.source();
                let source = s.source.as_deref().unwrap_or("");
                s.what != "C" && source.starts_with('@') && source != "@agent-actions" && !source.contains("__mlua")
            })
            .map(|mine| (level, mine))
        })
        .find_map(|(level, mine)| mine.then_some(level))
        .unwrap_or(1)
}
