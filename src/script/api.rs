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
//! Timers are in `timers.rs`; `agent.ucwa` and `agent.http` in `api_net.rs`.

use super::env::ScriptEnv;
use super::output::ScriptOutput;
use super::{api_net, timers};
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One `agent.on` subscription; the host owns it (no garbage-collection surprises).
#[derive(Clone)]
pub(crate) struct Sub {
    pub id: u64,
    /// `link.rel` to match, or `*`.
    pub rel: String,
    /// `type` to match; `None` = every type.
    pub kind: Option<String>,
    pub func: Function,
    /// The line of the `agent.on` call, for `check`'s messages.
    pub line: Option<usize>,
}

impl Sub {
    pub(crate) fn matches(&self, rel: &str, kind: &str) -> bool {
        (self.rel == "*" || self.rel == rel) && self.kind.as_deref().is_none_or(|k| k == kind)
    }
}

/// A script's subscriptions, in registration order (kept in the state's app data). The list
/// is copied on write (subscribing is rare, matching is per event), so a handler can
/// subscribe or unsubscribe while the runner walks a snapshot.
#[derive(Default)]
pub(crate) struct Subscriptions {
    list: Mutex<Arc<Vec<Sub>>>,
    ids: AtomicU64,
}

impl Subscriptions {
    /// Every subscription, in registration order, as of now.
    pub(crate) fn snapshot(&self) -> Arc<Vec<Sub>> {
        self.list.lock().expect("subscriptions lock").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.list.lock().expect("subscriptions lock").len()
    }

    fn add(&self, rel: String, kind: Option<String>, func: Function, line: Option<usize>) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let mut list = self.list.lock().expect("subscriptions lock");
        Arc::make_mut(&mut list).push(Sub { id, rel, kind, func, line });
        id
    }

    fn remove(&self, id: u64) -> bool {
        let mut list = self.list.lock().expect("subscriptions lock");
        let before = list.len();
        Arc::make_mut(&mut list).retain(|s| s.id != id);
        list.len() != before
    }
}

/// Who the script is, for its log lines and `agent.script`, and what it can reach.
#[derive(Clone)]
pub(crate) struct ScriptCtx {
    pub name: Arc<str>,
    pub version: u64,
    pub env: Arc<ScriptEnv>,
    /// `agent.config`: the script's `[scripts.config.<name>]`, secrets read.
    pub config: serde_json::Value,
    /// Hides those secrets in the script's log lines and errors.
    pub redactor: super::secrets::Redactor,
}

impl ScriptCtx {
    /// The context of one version of `name`; its config's secret references are read now.
    pub(crate) fn new(name: &str, version: u64, env: &Arc<ScriptEnv>) -> Result<ScriptCtx, String> {
        let raw = env.settings().config.get(name).cloned().unwrap_or_else(|| serde_json::json!({}));
        let (config, redactor) = super::secrets::resolve_as(&raw, env.secret_placeholders)?;
        Ok(ScriptCtx { name: Arc::from(name), version, env: env.clone(), config, redactor })
    }
}

/// The event the script's handlers are running for, if any: its log lines carry its `rel`,
/// `type` and `seq` (set by the runner around each handler call; the buffers are reused, so
/// this costs no allocation per event, where a tracing span per call cost a fifth of it).
#[derive(Default)]
pub(crate) struct CurrentEvent {
    pub active: bool,
    pub rel: String,
    pub kind: String,
    pub seq: u64,
}

/// The function `agent.on_unload` registered, if any (kept in the state's app data).
#[derive(Default)]
pub(crate) struct OnUnload(pub Mutex<Option<Function>>);

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

/// Installs the `agent` table (and `print`, which logs at info).
pub(crate) fn register(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<()> {
    lua.set_app_data(Subscriptions::default());
    lua.set_app_data(OnUnload::default());
    lua.set_app_data(CurrentEvent::default());
    lua.set_app_data(super::trace::Recording::default());
    super::interop::Interop::install(lua)?;
    let agent = lua.create_table()?;
    timers::register(lua, &agent, ctx.env.clock.clone())?;
    api_net::register(lua, &agent, ctx)?;
    super::api_metrics::register(lua, &agent, ctx)?;
    super::api_time::register(lua, &agent, ctx)?;
    super::api_cron::register(lua, &agent, ctx)?;
    // agent.me, agent.calls and agent.im, written in Lua over agent.ucwa (and what fills in
    // `e.text`, `e.from`, `e.direction` of message events).
    let event_field: Function = lua.load(include_str!("actions.lua")).set_name("@agent-actions").call((
        agent.clone(),
        lua.create_function(|lua, ()| Ok(user_level(lua)))?,
        super::api_people::native(lua, ctx)?,
    ))?;
    super::interop::set_field_hook(lua, event_field)?;
    agent.set(
        "on_unload",
        lua.create_function(|lua, f: Function| {
            if let Some(slot) = lua.app_data_ref::<OnUnload>() {
                *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            }
            Ok(())
        })?,
    )?;
    agent.set("state", state_table(lua, ctx)?)?;
    agent.set("config", lua.to_value(&ctx.config)?)?;
    agent.set("on", on_fn(lua)?)?;
    agent.set("log", log_table(lua, ctx)?)?;
    agent.set("json", json_table(lua)?)?;
    let clock = ctx.env.clock.clone();
    agent.set("now", lua.create_function(move |_, ()| Ok(clock.now_ms()))?)?;
    let account = lua.create_table()?;
    account.set("name", ctx.env.account.name.as_str())?;
    account.set("uri", ctx.env.account.uri.as_deref())?;
    agent.set("account", account)?;
    let script = lua.create_table()?;
    script.set("name", &*ctx.name)?;
    script.set("version", ctx.version)?;
    agent.set("script", script)?;
    let globals = lua.globals();
    globals.set("print", print_fn(lua, ctx)?)?;
    globals.set("agent", agent)?;
    Ok(())
}

/// `agent.on(rel, [type,] handler)` → a handle with `:off()`.
fn on_fn(lua: &Lua) -> mlua::Result<Function> {
    let handle_mt = lua.create_table()?;
    let off = lua.create_function(|lua, this: Table| {
        let id: u64 = this.get("id")?;
        Ok(lua.app_data_ref::<Subscriptions>().is_some_and(|s| s.remove(id)))
    })?;
    let methods = lua.create_table()?;
    methods.set("off", off)?;
    handle_mt.set("__index", methods)?;
    handle_mt.set("__metatable", false)?;
    lua.create_function(move |lua, (rel, a, b): (Value, Value, Value)| {
        const USAGE: &str = "agent.on(rel, [type,] handler): ";
        let rel = match rel {
            Value::String(s) => s.to_str()?.to_string(),
            other => return Err(mlua::Error::runtime(format!("{USAGE}rel must be a string, got {}", other.type_name()))),
        };
        let (kind, func) = match (a, b) {
            (Value::Function(f), Value::Nil) => (None, f),
            (Value::String(k), Value::Function(f)) => (Some(k.to_str()?.to_string()), f),
            (a, b) => return Err(mlua::Error::runtime(format!("{USAGE}expected a handler function, got {} and {}", a.type_name(), b.type_name()))),
        };
        let line = lua.inspect_stack(1, |d| d.current_line()).flatten();
        let id = lua.app_data_ref::<Subscriptions>().expect("registered with the agent table").add(rel.clone(), kind.clone(), func, line);
        let handle = lua.create_table()?;
        handle.set("id", id)?;
        handle.set("rel", rel)?;
        handle.set("type", kind)?;
        handle.set_metatable(Some(handle_mt.clone()))?;
        Ok(handle)
    })
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

fn log_table(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        let ctx = ctx.clone();
        let f = lua.create_function(move |lua, (msg, fields): (Value, Option<Value>)| {
            let message = display(&msg);
            let fields = match fields {
                None | Some(Value::Nil) => None,
                Some(v) => Some({
                    super::interop::complete_events(lua, &v)?;
                    let text = super::bounded::json(lua, &v, "agent.log: fields")?;
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| mlua::Error::runtime(format!("agent.log: fields: {e}")))?
                }),
            };
            emit(lua, &ctx, level, message, fields);
            Ok(())
        })?;
        t.set(level, f)?;
    }
    Ok(t)
}

fn print_fn(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<Function> {
    let ctx = ctx.clone();
    lua.create_function(move |lua, args: mlua::Variadic<Value>| {
        let message = args.iter().map(display).collect::<Vec<_>>().join("\t");
        emit(lua, &ctx, "info", message, None);
        Ok(())
    })
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => "nil".into(),
        other => other.to_string().unwrap_or_else(|_| format!("<{}>", other.type_name())),
    }
}

/// A script's log line: to tracing (with the script's name) and to the host's output stream.
fn emit(lua: &Lua, ctx: &ScriptCtx, level: &'static str, mut message: String, mut fields: Option<serde_json::Value>) {
    let script = &*ctx.name;
    // (A copy only when a secret was found: this runs for every log line.)
    if let std::borrow::Cow::Owned(redacted) = ctx.redactor.redact(&message) {
        message = redacted;
    }
    if let Some(f) = fields.as_mut() {
        ctx.redactor.redact_value(f);
    }
    let f = fields.as_ref().map(|f| f.to_string());
    let f = f.as_deref().unwrap_or("");
    super::trace::record(lua, |at_us| super::trace::Step::Log {
        at_us,
        level: level.into(),
        message: if f.is_empty() { message.clone() } else { format!("{message} {f}") },
    });
    let current = lua.app_data_ref::<CurrentEvent>();
    let ev = current.as_deref().filter(|c| c.active);
    let (rel, kind, seq) = (ev.map(|c| c.rel.as_str()), ev.map(|c| c.kind.as_str()), ev.map(|c| c.seq));
    match level {
        "debug" => {
            tracing::debug!(target: "script", script, version = ctx.version, rel, r#type = kind, seq, fields = f, "{message}")
        }
        "info" => {
            tracing::info!(target: "script", script, version = ctx.version, rel, r#type = kind, seq, fields = f, "{message}")
        }
        "warn" => {
            tracing::warn!(target: "script", script, version = ctx.version, rel, r#type = kind, seq, fields = f, "{message}")
        }
        _ => {
            tracing::error!(target: "script", script, version = ctx.version, rel, r#type = kind, seq, fields = f, "{message}")
        }
    }
    ctx.env.emit(ScriptOutput::Log { script: script.to_string(), version: ctx.version, level, message, fields });
}

fn json_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            super::interop::complete_events(lua, &v)?;
            super::bounded::json(lua, &v, "agent.json.encode")
        })?,
    )?;
    t.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let v: serde_json::Value = serde_json::from_slice(&s.as_bytes()).map_err(|e| mlua::Error::runtime(format!("agent.json.decode: {e}")))?;
            lua.to_value(&v)
        })?,
    )?;
    t.set("null", lua.null())?;
    // `agent.json.array(t)` marks a table as an array, so an empty one encodes as `[]`.
    t.set(
        "array",
        lua.create_function(|lua, t: Option<Table>| {
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    Ok(t)
}
