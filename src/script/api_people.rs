//! What `agent.people.watch`, `.unwatch` and `.watching` (in agent-actions) stand on: a
//! script's watched contacts, kept in the account's store under the script's name (not in the
//! Lua state: they outlive a reload, a new application and a restart). The account's presence
//! subscription (`agent/presence.rs`) is told when they change. Offline (`replay`, `test`),
//! a watch is also reported as the request it would make.

use super::ctx::ScriptCtx;
use super::env::Net;
use super::offline::Request;
use super::output::ScriptOutput;
use mlua::{Lua, Table, Value};

/// The `duration` of the account's presence subscription (minutes; pools take 10 to 30): what
/// `agent/presence.rs` asks for, and what an offline watch reports.
pub const DURATION_MINUTES: u64 = 30;

/// The most contacts an account watches, its scripts together (a pool refuses large
/// subscriptions: `LimitExceeded`); `agent/presence.rs` subscribes to no more.
pub const MAX_WATCHED: usize = 200;

/// The functions agent-actions gets; each answers nil, or an error text without the name of
/// the function (agent-actions adds it, with the script's line).
pub(crate) fn native(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let c = ctx.clone();
    t.set(
        "watch",
        lua.create_function(move |_, uris: Vec<String>| {
            let store = &c.env.store;
            let mut all = match store.watched(None) {
                Ok(a) => a,
                Err(e) => return Ok(Some(e.to_string())),
            };
            all.extend(uris.iter().cloned());
            let max = MAX_WATCHED;
            if all.len() > max {
                return Ok(Some(format!("an account watches at most {max} contacts (its scripts together)")));
            }
            if let Net::Offline(net) = &c.env.net {
                let body = serde_json::json!({"duration": DURATION_MINUTES, "uris": uris});
                let req = Request {
                    script: c.name.to_string(),
                    via: "ucwa",
                    method: "POST".into(),
                    url: format!("{}/people/presenceSubscriptions", net.application()),
                    body: Some(body.to_string()),
                };
                c.env.emit(ScriptOutput::Request {
                    script: req.script.clone(),
                    via: req.via,
                    method: req.method.clone(),
                    url: req.url.clone(),
                    body: req.body.clone(),
                });
                net.answer(req);
            }
            if let Err(e) = store.watch(&c.name, &uris) {
                return Ok(Some(e.to_string()));
            }
            c.env.watches.changed.notify_one();
            Ok(None)
        })?,
    )?;
    let c = ctx.clone();
    t.set(
        "unwatch",
        lua.create_function(move |_, uris: Option<Vec<String>>| {
            if let Err(e) = c.env.store.unwatch(&c.name, uris.as_deref()) {
                return Ok(Some(e.to_string()));
            }
            c.env.watches.changed.notify_one();
            Ok(None)
        })?,
    )?;
    let c = ctx.clone();
    t.set(
        "watching",
        lua.create_function(move |lua, ()| {
            let list = c.env.store.watched(Some(std::slice::from_ref(&c.name.to_string()))).map_err(|e| mlua::Error::runtime(e.to_string()))?;
            let out = lua.create_table()?;
            for uri in list {
                out.raw_push(uri)?;
            }
            Ok(Value::Table(out))
        })?,
    )?;
    Ok(t)
}
