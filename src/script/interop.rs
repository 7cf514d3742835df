//! Events as Lua tables. A table is made with `rel`, `type` and `seq`; every other field is
//! filled in when a handler first reads it (then kept in the table): `href`, `title`,
//! `sender`, `conversation`, `status` from the event's packed strings, and `raw`, `resource`,
//! `reason` converted from its JSON text. At full speed a handler reads one or two fields, and
//! making all of them would cost more than the call itself.
//!
//! What the fields are read from is the event's packed form (`ucwa::event`) as a Lua string,
//! kept in a weak-keyed side table: the garbage collector frees it with the table, and no Rust
//! value (and no finalizer) lives on in Lua per event. One metatable per state serves every
//! event table (another serves `message` and `messagingInvitation` events, whose `text`, `from`
//! and `direction` agent-actions fills in, fetching if it must, and `contactPresence` events,
//! whose `uri` and `availability` it fills in the same way); `pairs(e)` and
//! `agent.json.encode(e)` see every field but those.

use crate::ucwa::event::{embedded, packed_field, Field};
use crate::ucwa::Event;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};

/// Per-state values made once: the table constructor (a Lua function: one call into Lua per
/// event instead of one per field) and the side table behind the lazy fields.
pub(crate) struct Interop {
    /// `MAKE_EVENT` and `CALL_EVENT` (builds the event's table once per token and calls a
    /// handler with it, in one entry into Lua per handler call) are compiled at first use: the
    /// run path (`dispatch`) serves events, and only a paused script, `replay` and `test` take
    /// these, while every state of a 10,000-account agent would hold them.
    make: std::sync::OnceLock<Function>,
    call: std::sync::OnceLock<Function>,
    /// Lua's own `setmetatable`, which they take.
    raw_setmetatable: Function,
    /// `dispatch::DISPATCH`: a run of events and their handlers in one entry into Lua.
    dispatch: Function,
    sources: Table,
    metatable: Table,
    /// The metatable of `message` and `messagingInvitation` events: theirs also fills in `text`,
    /// `from` and `direction` (a Lua `__index`, so the fetch it may make can yield).
    im_metatable: Table,
    /// `hooks.field(e, name)`: agent-actions' function behind those fields.
    hooks: Table,
}

/// Builds an event table in Lua; `sources[t]` keeps the packed event for the lazy fields.
const MAKE_EVENT: &str = r#"
local setmetatable, mt, im_mt, sources = ...
return function(rel, kind, seq, source)
  local t = setmetatable({rel = rel, type = kind, seq = seq}, (rel == "message" or rel == "messagingInvitation" or rel == "contactPresence") and im_mt or mt)
  sources[t] = source
  return t
end
"#;

/// Calls a handler with an event's table, building the table on the first call for the event
/// (a new `token`) and handing the same table to the event's next handlers (`last`: no handler
/// follows): one entry into Lua per handler call, where building the table first was a second
/// one (BENCHMARKS.md). The table between two handlers is kept in a table, not an upvalue: under
/// generational collection, a young value stored in an old closure's upvalue is promoted to old
/// at once, and every event table then lived until a major collection. Not a tail call: a
/// handler's error traceback lists its frames then this one (`event:…`, which `ucwa-agent test`
/// leaves out), not "(...tail calls...)". The handler comes last, as a vararg, and is called
/// from a temporary: called from a named local, its frame would read "in local 'handler'"
/// instead of "in function <file:line>" as before.
const CALL_EVENT: &str = r#"
local setmetatable, mt, im_mt, sources = ...
local current = {}
return function(token, rel, kind, seq, source, last, ...)
  local t
  if current[1] == token then
    t = current[2]
  else
    t = setmetatable({rel = rel, type = kind, seq = seq}, (rel == "message" or rel == "messagingInvitation" or rel == "contactPresence") and im_mt or mt)
    sources[t] = source
  end
  if not last then
    current[1], current[2] = token, t
  elseif current[1] then
    current[1], current[2] = nil, nil
  end
  ;(...)(t)
end
"#;

/// The `__index` of message events: the packed fields first, then agent-actions' hook for the
/// fields it knows (kept in the table once read, like the others).
const IM_INDEX: &str = r#"
local lazy, hooks, rawset = ...
local known = {text = true, from = true, direction = true, uri = true, availability = true}
return function(t, k)
  local v = lazy(t, k)
  if v == nil and known[k] and hooks.field then
    v = hooks.field(t, k)
    if v ~= nil then rawset(t, k, v) end
  end
  return v
end
"#;

/// Installs agent-actions' function behind `e.text`, `e.from` and `e.direction` of message
/// events, and `e.uri` and `e.availability` of `contactPresence` events.
pub(crate) fn set_field_hook(lua: &Lua, hook: Function) -> mlua::Result<()> {
    let interop = lua.app_data_ref::<Interop>().ok_or_else(|| mlua::Error::runtime("event interop not installed"))?;
    interop.hooks.raw_set("field", hook)
}

/// Until agent-actions is installed (at first use), reading `hooks.field` installs it.
pub(crate) fn set_field_hook_installer(lua: &Lua, install: Function) -> mlua::Result<()> {
    const INDEX: &str = "local install, rawget = ... return function(hooks, k) if k == 'field' then install() return rawget(hooks, k) end end";
    let interop = lua.app_data_ref::<Interop>().ok_or_else(|| mlua::Error::runtime("event interop not installed"))?;
    let rawget: Function = lua.globals().raw_get("rawget")?;
    let index: Function = lua.load(INDEX).set_name("=event").call((install, rawget))?;
    let mt = lua.create_table()?;
    mt.raw_set("__index", index)?;
    interop.hooks.set_metatable(Some(mt))
}

/// The fields filled in on first read, besides `raw`, `resource` and `reason`.
const LAZY: [&str; 5] = ["href", "title", "sender", "conversation", "status"];

impl Interop {
    pub(crate) fn install(lua: &Lua) -> mlua::Result<()> {
        let sources = lua.create_table()?;
        let weak = lua.create_table()?;
        weak.raw_set("__mode", "k")?;
        sources.set_metatable(Some(weak))?;
        let lookup = sources.clone();
        let lazy = lua.create_function(move |lua, (t, key): (Table, Value)| {
            let Value::String(name) = &key else {
                return Ok(Value::Nil);
            };
            let Ok(source) = lookup.raw_get::<mlua::LuaString>(&t) else {
                return Ok(Value::Nil);
            };
            let v = field(lua, &source.as_bytes(), &name.as_bytes())?;
            if !v.is_nil() {
                t.raw_set(key, v.clone())?;
            }
            Ok(v)
        })?;
        let lookup = sources.clone();
        let next: Function = lua.globals().raw_get("next")?;
        let pairs = lua.create_function(move |lua, t: Table| {
            complete(lua, &lookup, &t)?;
            Ok((next.clone(), t, Value::Nil))
        })?;
        let metatable = lua.create_table()?;
        metatable.raw_set("__index", lazy.clone())?;
        metatable.raw_set("__pairs", pairs.clone())?;
        // Out of scripts' reach: a `__gc` added to it would mark every later event for finalizing.
        metatable.raw_set("__metatable", false)?;
        let hooks = lua.create_table()?;
        let rawset: Function = lua.globals().raw_get("rawset")?;
        let im_index: Function = lua.load(IM_INDEX).set_name("=event").call((lazy, hooks.clone(), rawset))?;
        let im_metatable = lua.create_table()?;
        im_metatable.raw_set("__index", im_index)?;
        im_metatable.raw_set("__pairs", pairs)?;
        im_metatable.raw_set("__metatable", false)?;
        // Lua's own setmetatable: the sandbox's checks for `__gc` cost a call per event, and
        // this metatable has none.
        let raw: Function = lua.named_registry_value(super::sandbox::RAW_SETMETATABLE).or_else(|_| lua.globals().raw_get("setmetatable"))?;
        let current = lua.create_table()?;
        // SAFETY: `step` is called only by this function, with the pointer the runner passes
        // (`dispatch::step`'s contract); scripts reach neither. The closure takes the values
        // pushed as its upvalues, in `dispatch::STEP_UPVALUES`' order.
        let step: Function = unsafe {
            lua.exec_raw((metatable.clone(), im_metatable.clone(), sources.clone(), current, "rel", "type", "seq", "", ""), |state| {
                mlua::ffi::lua_pushcclosure(state, super::dispatch::step, super::dispatch::STEP_UPVALUES)
            })?
        };
        let rawget: Function = lua.globals().raw_get("rawget")?;
        let dispatch: Function = lua.load(super::dispatch::DISPATCH).set_name("=event").call((step, rawget))?;
        lua.set_app_data(Interop {
            make: Default::default(),
            call: Default::default(),
            raw_setmetatable: raw,
            dispatch,
            sources,
            metatable,
            im_metatable,
            hooks,
        });
        Ok(())
    }
}

/// A lazy field of a packed event, as a Lua value (nil when the event has none).
fn field(lua: &Lua, packed: &[u8], name: &[u8]) -> mlua::Result<Value> {
    let text = |f: Field| match packed_field(packed, f) {
        Some(s) => lua.create_string(s).map(Value::String),
        None => Ok(Value::Nil),
    };
    // The pool's JSON was read whole by the batch's parse, but a value nested past serde's
    // depth limit cannot be built: `e.raw` says so as the script's error (it was a silent null).
    let raw = || {
        serde_json::from_str::<serde_json::Value>(packed_field(packed, Field::Raw).unwrap_or("null")).map_err(|e| {
            let name = String::from_utf8_lossy(name);
            mlua::Error::runtime(format!("e.{name}: the event's JSON cannot be made a Lua value: {e}"))
        })
    };
    let convert = |v: Option<&serde_json::Value>| v.map_or(Ok(Value::Nil), |v| lua.to_value(v));
    match name {
        b"href" => text(Field::Href),
        b"title" => text(Field::Title),
        b"conversation" => text(Field::Conversation),
        b"status" => text(Field::Status),
        b"sender" => {
            let sender = lua.create_table()?;
            sender.raw_set("rel", packed_field(packed, Field::SenderRel).unwrap_or(""))?;
            sender.raw_set("href", packed_field(packed, Field::SenderHref).unwrap_or(""))?;
            Ok(Value::Table(sender))
        }
        b"raw" => convert(Some(&raw()?)),
        // (None when the JSON cannot be built: the actions then fetch the resource.)
        b"resource" => convert(raw().ok().as_ref().and_then(|r| embedded(r, packed_field(packed, Field::Rel).unwrap_or("")))),
        b"reason" => convert(raw().ok().as_ref().and_then(|r| r.get("reason"))),
        _ => Ok(Value::Nil),
    }
}

/// Fills in every lazy field of an event table that is still missing, `raw`, `resource` and
/// `reason` included (what `pairs(e)`, `agent.json.encode(e)` and log fields show is the whole
/// event; only a script that asks for all of it pays for converting its JSON).
fn complete(lua: &Lua, sources: &Table, t: &Table) -> mlua::Result<()> {
    let Ok(source) = sources.raw_get::<mlua::LuaString>(t) else {
        return Ok(());
    };
    let packed = source.as_bytes();
    for &name in LAZY.iter().chain(&["raw", "resource", "reason"]) {
        if t.raw_get::<Value>(name)?.is_nil() {
            // (`raw` that cannot be built stays out: reading it says why.)
            let Ok(v) = field(lua, &packed, name.as_bytes()) else { continue };
            if !v.is_nil() {
                t.raw_set(name, v)?;
            }
        }
    }
    Ok(())
}

/// Fills in the lazy fields of `v` if it is an event table, or of the event tables directly in
/// it, before it is converted as a whole (`agent.json.encode(e)`, `agent.log.info(msg, {event = e})`).
pub(crate) fn complete_events(lua: &Lua, v: &Value) -> mlua::Result<()> {
    let Value::Table(t) = v else { return Ok(()) };
    let Some(interop) = lua.app_data_ref::<Interop>() else {
        return Ok(());
    };
    let is_event = |t: &Table| t.metatable().is_some_and(|m| m == interop.metatable || m == interop.im_metatable);
    if is_event(t) {
        return complete(lua, &interop.sources, t);
    }
    for pair in t.pairs::<Value, Value>() {
        if let (_, Value::Table(inner)) = pair? {
            if is_event(&inner) {
                complete(lua, &interop.sources, &inner)?;
            }
        }
    }
    Ok(())
}

/// The table a handler receives: `rel`, `type`, `seq`, and on first read `href`, `title`,
/// `sender {rel, href}`, `conversation`, `status`, `resource`, `reason`, `raw`.
pub(crate) fn event_table(lua: &Lua, ev: &Event) -> mlua::Result<Table> {
    let make = compiled(lua, |i| &i.make, MAKE_EVENT)?;
    make.call((ev.rel(), ev.kind(), ev.seq, lua.create_string(ev.packed())?))
}

/// `MAKE_EVENT` or `CALL_EVENT` of the state, compiled at its first use.
fn compiled(lua: &Lua, cell: fn(&Interop) -> &std::sync::OnceLock<Function>, source: &str) -> mlua::Result<Function> {
    let missing = || mlua::Error::runtime("event interop not installed");
    let args = {
        let interop = lua.app_data_ref::<Interop>().ok_or_else(missing)?;
        if let Some(f) = cell(&interop).get() {
            return Ok(f.clone());
        }
        (interop.raw_setmetatable.clone(), interop.metatable.clone(), interop.im_metatable.clone(), interop.sources.clone())
    };
    // (The table is made in `CALL_EVENT` itself, as `MAKE_EVENT` does: a Lua call less per
    // event, and every instruction counts while the sandbox's count hook is set.)
    let f: Function = lua.load(source).set_name("=event").call(args)?;
    let interop = lua.app_data_ref::<Interop>().ok_or_else(missing)?;
    Ok(cell(&interop).get_or_init(|| f).clone())
}

/// The function that calls a handler with an event's table (`CALL_EVENT`): `(token, rel, kind,
/// seq, packed, last, handler)`, a new `token` per event (`next_token`).
pub(crate) fn event_caller(lua: &Lua) -> mlua::Result<Function> {
    compiled(lua, |i| &i.call, CALL_EVENT)
}

/// The function that runs a run of events through their handlers (`dispatch::DISPATCH`).
pub(crate) fn dispatcher(lua: &Lua) -> mlua::Result<Function> {
    Ok(lua.app_data_ref::<Interop>().ok_or_else(|| mlua::Error::runtime("event interop not installed"))?.dispatch.clone())
}

/// A token no event of any state had before (`event_caller`'s second argument).
pub(crate) fn next_token() -> u64 {
    static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
