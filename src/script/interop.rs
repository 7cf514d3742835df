//! Events as Lua tables. The cheap fields are set directly; `raw`, `resource` and `reason` are
//! converted from JSON only when a handler reads them (converting a whole JSON value costs far
//! more than the handler call itself), then cached in the table.

use crate::ucwa::Event;
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::sync::Arc;

/// The table a handler receives: `rel`, `type`, `href`, `title`, `sender {rel, href}`,
/// `conversation`, `status`, `seq`, and lazily `resource`, `reason`, `raw`.
pub(crate) fn event_table(lua: &Lua, ev: &Arc<Event>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 12)?;
    t.raw_set("rel", ev.rel.as_str())?;
    t.raw_set("type", ev.kind.as_str())?;
    t.raw_set("href", ev.href.as_str())?;
    t.raw_set("seq", ev.seq)?;
    if let Some(title) = &ev.title {
        t.raw_set("title", title.as_str())?;
    }
    if let Some(c) = &ev.conversation {
        t.raw_set("conversation", c.as_str())?;
    }
    if let Some(s) = ev.status() {
        t.raw_set("status", s)?;
    }
    let sender = lua.create_table_with_capacity(0, 2)?;
    sender.raw_set("rel", ev.sender_rel.as_str())?;
    sender.raw_set("href", ev.sender_href.as_str())?;
    t.raw_set("sender", sender)?;

    let source = ev.clone();
    let lazy = lua.create_function(move |lua, (t, key): (Table, Value)| {
        let name = match &key {
            Value::String(s) => s.to_string_lossy(),
            _ => return Ok(Value::Nil),
        };
        let json = match name.as_str() {
            "raw" => Some(&source.raw),
            "resource" => source.resource(),
            "reason" => source.reason(),
            _ => None,
        };
        let Some(json) = json else { return Ok(Value::Nil) };
        let v = lua.to_value(json)?;
        t.raw_set(key, v.clone())?;
        Ok(v)
    })?;
    let mt = lua.create_table_with_capacity(0, 1)?;
    mt.raw_set("__index", lazy)?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}
