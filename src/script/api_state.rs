//! `agent.state`: loaded key by key from the store when a version is built, brought up to what
//! the old version committed at the swap, and serialised for each commit.

use super::ctx::ScriptCtx;
use mlua::{Lua, LuaSerdeExt, Table, Value};

/// Installs `agent.state` as last committed.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    agent.set("state", state_table(lua, ctx)?)
}

/// The committed keys a version was built with (to tell, at the swap, what its top level set).
struct BuiltState(std::collections::HashMap<String, String>);

/// `agent.state` as last committed for this script (an empty table the first time). A key
/// whose stored value cannot be read is left out, with an error naming it; the others load.
pub(crate) fn state_table(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<Value> {
    let saved = ctx.env.store.state(&ctx.name).map_err(|e| mlua::Error::runtime(e.to_string()))?;
    let t = lua.create_table()?;
    for (key, json) in &saved {
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(v) => t.raw_set(key.as_str(), lua.to_value(&v)?)?,
            Err(error) => {
                tracing::error!(script = %ctx.name, key, %error, "agent.state: a saved key cannot be read; it is left out")
            }
        }
    }
    lua.set_app_data(BuiltState(saved.into_iter().collect()));
    Ok(Value::Table(t))
}

/// Brings a new version's `agent.state` up to what the old version committed after the new
/// one was built: every committed key its top level left as it found it takes the committed
/// value; keys its top level set keep theirs. The table stays the same object, so a script's
/// local alias of it stays valid.
pub(crate) fn merge_committed_state(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<()> {
    let agent: Table = lua.globals().raw_get("agent")?;
    let Value::Table(state) = agent.raw_get::<Value>("state")? else {
        return Ok(());
    };
    let built = lua.remove_app_data::<BuiltState>().map(|b| b.0).unwrap_or_default();
    let committed = ctx.env.store.state(&ctx.name).map_err(|e| mlua::Error::runtime(e.to_string()))?;
    for (key, json) in committed {
        let now: Value = state.raw_get(key.as_str())?;
        // Compared as JSON values, not texts: a table's keys come out in any order.
        let untouched = match built.get(&key) {
            Some(was) => serde_json::from_str::<serde_json::Value>(was).ok() == serde_json::to_value(&now).ok(),
            None => now.is_nil(),
        };
        if untouched {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) {
                state.raw_set(key.as_str(), lua.to_value(&v)?)?;
            }
        }
    }
    Ok(())
}

/// `agent.state` serialised for the database; an error names what cannot be stored.
pub(crate) fn state_json(lua: &Lua) -> Result<String, String> {
    let agent: Table = lua.globals().get("agent").map_err(|e| format!("the agent table is gone: {e}"))?;
    let state: Value = agent.raw_get("state").map_err(|e| e.to_string())?;
    match state {
        Value::Nil => Ok("{}".to_string()),
        Value::Table(_) => serde_json::to_string(&state).map_err(|e| format!("agent.state can hold only nil, booleans, numbers, strings and tables: {e}")),
        other => Err(format!("agent.state must be a table, got {}", other.type_name())),
    }
}
