//! Events as Lua tables. The cheap fields are set by one Lua function per event; `raw`, `resource` and `reason` are converted from JSON only when a handler reads
//! them (converting a whole JSON value costs far more than the handler call itself), then
//! cached in the table. The lazy lookup uses one metatable per state, and finds the event a
//! table came from in a weak-keyed side table, so no closure is made per event.

use crate::ucwa::Event;
use mlua::{AnyUserData, Function, Lua, LuaSerdeExt, Table, UserData, Value};
use std::sync::Arc;

/// The event behind a table, for its lazy fields.
struct Source(Arc<Event>);
impl UserData for Source {}

/// Per-state values made once: the table constructor (a Lua function: one call into Lua per
/// event instead of one per field) and the side table behind the lazy fields.
pub(crate) struct Interop {
    make: Function,
}

/// Builds an event table in Lua; `sources[t]` remembers the event for the lazy fields.
const MAKE_EVENT: &str = r#"
local setmetatable, mt, sources = setmetatable, ...
return function(rel, kind, href, seq, title, conversation, status, sender_rel, sender_href, source)
  local t = setmetatable({rel = rel, type = kind, href = href, seq = seq, title = title,
    conversation = conversation, status = status, sender = {rel = sender_rel, href = sender_href}}, mt)
  sources[t] = source
  return t
end
"#;

impl Interop {
    pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
        let sources = lua.create_table()?;
        let weak = lua.create_table()?;
        weak.raw_set("__mode", "k")?;
        sources.set_metatable(Some(weak))?;
        let lookup = sources.clone();
        let lazy = lua.create_function(move |lua, (t, key): (Table, Value)| {
            let Value::String(name) = &key else { return Ok(Value::Nil) };
            let Ok(source) = lookup.raw_get::<AnyUserData>(t.clone()) else { return Ok(Value::Nil) };
            let source = source.borrow::<Source>()?;
            let json = match &*name.as_bytes() {
                b"raw" => Some(source.0.raw()),
                b"resource" => source.0.resource(),
                b"reason" => source.0.reason(),
                _ => None,
            };
            let Some(json) = json else { return Ok(Value::Nil) };
            let v = lua.to_value(json)?;
            t.raw_set(key, v.clone())?;
            Ok(v)
        })?;
        let metatable = lua.create_table()?;
        metatable.raw_set("__index", lazy)?;
        let make: Function = lua.load(MAKE_EVENT).set_name("=event").call((metatable, sources))?;
        lua.set_app_data(Interop { make });
        Ok(())
    }
}

/// The table a handler receives: `rel`, `type`, `href`, `title`, `sender {rel, href}`,
/// `conversation`, `status`, `seq`, and lazily `resource`, `reason`, `raw`.
pub(crate) fn event_table(lua: &Lua, ev: &Arc<Event>) -> mlua::Result<Table> {
    let make = lua.app_data_ref::<Interop>().ok_or_else(|| mlua::Error::runtime("event interop not installed"))?.make.clone();
    make.call((
        ev.rel.as_str(),
        ev.kind.as_str(),
        ev.href.as_str(),
        ev.seq,
        ev.title.as_deref(),
        ev.conversation.as_deref(),
        ev.status(),
        ev.sender_rel.as_str(),
        ev.sender_href.as_str(),
        lua.create_userdata(Source(ev.clone()))?,
    ))
}
