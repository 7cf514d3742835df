//! The core of the `agent` table: `agent.on`, `agent.on_unload`, `agent.log` (and `print`),
//! `agent.json`, `agent.config`, `agent.now`, `agent.account`, `agent.script`.

use super::ctx::{CurrentEvent, OnUnload, ScriptCtx, Subscriptions};
use super::log_budget::LogBudget;
use super::output::ScriptOutput;
use mlua::{Function, Lua, LuaSerdeExt, Table, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Installs the core functions in `agent`, and `print`.
pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    agent.set(
        "on_unload",
        lua.create_function(|lua, f: Function| {
            if let Some(slot) = lua.app_data_ref::<OnUnload>() {
                *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            }
            Ok(())
        })?,
    )?;
    agent.set("config", lua.to_value(&ctx.config)?)?;
    agent.set("on", on_fn(lua)?)?;
    // One budget for agent.log and print, per version (none offline).
    let budget = ctx.env.settings().log_rate.map(|rate| Arc::new(Mutex::new(LogBudget::new(rate, Instant::now()))));
    agent.set("log", log_table(lua, ctx, &budget)?)?;
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
    lua.globals().set("print", print_fn(lua, ctx, budget)?)?;
    Ok(())
}

/// `agent.on(rel, [type,] handler)` → a handle with `:off()`.
fn on_fn(lua: &Lua) -> mlua::Result<Function> {
    let handle_mt = lua.create_table()?;
    let off = lua.create_function(|lua, this: Table| {
        let id: u64 = this.get("id")?;
        let removed = lua.app_data_ref::<Subscriptions>().is_some_and(|s| s.remove(id));
        super::ctx::note_change(lua);
        Ok(removed)
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
        super::ctx::note_change(lua);
        let handle = lua.create_table()?;
        handle.set("id", id)?;
        handle.set("rel", rel)?;
        handle.set("type", kind)?;
        handle.set_metatable(Some(handle_mt.clone()))?;
        Ok(handle)
    })
}

fn log_table(lua: &Lua, ctx: &ScriptCtx, budget: &Option<Arc<Mutex<LogBudget>>>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for level in ["debug", "info", "warn", "error"] {
        let (ctx, budget) = (ctx.clone(), budget.clone());
        let f = lua.create_function(move |lua, (msg, fields): (Value, Option<Value>)| {
            if !admitted(&ctx, budget.as_deref()) {
                return Ok(());
            }
            let message = display(&msg);
            let fields = match fields {
                None | Some(Value::Nil) => None,
                Some(v) => Some({
                    super::interop::complete_events(lua, &v)?;
                    let text = super::api_lazy::json(lua, &v, "agent.log: fields")?;
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| mlua::Error::runtime(format!("agent.log: fields: {e}")))?
                }),
            };
            emit(lua, &ctx, level, message, fields, budget.is_some());
            Ok(())
        })?;
        t.set(level, f)?;
    }
    Ok(t)
}

fn print_fn(lua: &Lua, ctx: &ScriptCtx, budget: Option<Arc<Mutex<LogBudget>>>) -> mlua::Result<Function> {
    let ctx = ctx.clone();
    lua.create_function(move |lua, args: mlua::Variadic<Value>| {
        if !admitted(&ctx, budget.as_deref()) {
            return Ok(());
        }
        let message = args.iter().map(display).collect::<Vec<_>>().join("\t");
        emit(lua, &ctx, "info", message, None, budget.is_some());
        Ok(())
    })
}

/// The longest message (and fields' JSON) a script's line has in `run`, in bytes.
const MAX_LINE: usize = 64 << 10;

/// Whether the script's next line is logged (before any work on it); lines dropped are said at
/// WARN by the agent, with the script's name, at most every `SAY_EVERY`.
fn admitted(ctx: &ScriptCtx, budget: Option<&Mutex<LogBudget>>) -> bool {
    let Some(budget) = budget else { return true };
    let (admit, rate) = {
        let mut b = budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (b.admit(Instant::now()), b.rate())
    };
    if let Some(dropped) = admit.say_dropped {
        let script = &*ctx.name;
        let why = format!("it logs more than {} lines at once or {} a second", rate.burst, rate.per_sec);
        tracing::warn!(script, version = ctx.version, dropped, "script log lines dropped: {why} (README \"Logs\")");
        let message = format!("{dropped} log line(s) of this script dropped: {why}");
        ctx.env.emit(ScriptOutput::Log { script: script.to_string(), version: ctx.version, level: "warn", message, fields: None });
    }
    admit.pass
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => "nil".into(),
        other => other.to_string().unwrap_or_else(|_| format!("<{}>", other.type_name())),
    }
}

/// A script's log line: to tracing (with the script's name) and to the host's output stream.
fn emit(lua: &Lua, ctx: &ScriptCtx, level: &'static str, mut message: String, mut fields: Option<serde_json::Value>, limited: bool) {
    let script = &*ctx.name;
    // (A copy only when a secret was found: this runs for every log line.)
    if let std::borrow::Cow::Owned(redacted) = ctx.redactor.redact(&message) {
        message = redacted;
    }
    if let Some(f) = fields.as_mut() {
        ctx.redactor.redact_value(f);
    }
    // Where lines are counted, their length is bounded too (after redaction: a cut secret would
    // no longer be found): 10,000 lines of 10 MB each would cost the script little and the log
    // a great deal.
    if limited && message.len() > MAX_LINE {
        let cut = (0..=MAX_LINE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        let more = message.len() - cut;
        message.truncate(cut);
        message.push_str(&format!("… ({more} bytes cut)"));
    }
    let mut f = fields.as_ref().map(|f| f.to_string());
    if limited && f.as_ref().is_some_and(|f| f.len() > MAX_LINE) {
        let notice = serde_json::json!({ "cut": format!("the fields were more than {MAX_LINE} bytes of JSON") });
        f = Some(notice.to_string());
        fields = Some(notice);
    }
    let f = f.as_deref().unwrap_or("");
    super::trace::record(lua, |at_us| super::trace::Step::Log {
        at_us,
        level: level.into(),
        message: if f.is_empty() { message.clone() } else { format!("{message} {f}") },
    });
    let ev = lua.app_data_ref::<CurrentEvent>().and_then(|c| c.event());
    let (rel, kind, seq) = (ev.as_ref().map(|e| e.0.as_str()), ev.as_ref().map(|e| e.1.as_str()), ev.as_ref().map(|e| e.2));
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
            super::api_lazy::json(lua, &v, "agent.json.encode")
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
