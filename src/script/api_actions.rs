//! `agent.me`, `agent.calls`, `agent.im` and `agent.people`: written in Lua (`actions.lua`) over
//! `agent.ucwa`, with what fills in `e.text`, `e.from`, `e.direction` of message events.

use super::ctx::ScriptCtx;
use mlua::{Function, Lua, Table};

/// Runs agent-actions over the table built so far.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let event_field: Function = lua.load(include_str!("actions.lua")).set_name("@agent-actions").call((
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
