//! `agent.ucwa.*` (the agent's own UCWA session) and `agent.http.request` (allowlisted
//! outbound HTTP). Both suspend the handler, not the agent; both count against the handler's
//! wall-clock limit. Usage from a handler:
//!
//! ```lua
//! local r = agent.ucwa.get(e.href)                 -- relative hrefs are resolved on the pool
//! if r.status == 200 then agent.log.info(r.body.state) end
//! agent.ucwa.post(href, {SupportedModalities = {"Audio"}})
//! agent.ucwa.post(accept_href, sdp_text, "application/sdp")
//! local w = agent.http.request{method = "POST", url = "https://hooks.example.com/x",
//!                              headers = {["X-Token"] = "…"}, body = {text = "call"}, timeout = 5000}
//! ```

use super::ctx::ScriptCtx;
use super::env::{Net, ScriptEnv};
use super::offline::{OfflineNet, Request};
use super::output::ScriptOutput;
use bytes::Bytes;
use mlua::{Lua, LuaSerdeExt, Table, Value};
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;

/// A request body from Lua: a table is JSON; a string is sent as it is.
fn body_of(lua: &Lua, v: Value, content_type: Option<String>, what: &str) -> mlua::Result<Option<(String, Bytes)>> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some((content_type.unwrap_or_else(|| "application/json".into()), Bytes::from(s.as_bytes().to_vec())))),
        Value::Table(_) => {
            // (As `agent.json.encode` does: an API area not yet installed serializes as it will.)
            let json = super::api_lazy::json(lua, &v, &format!("{what}: body"))?;
            Ok(Some((content_type.unwrap_or_else(|| "application/json".into()), Bytes::from(json))))
        }
        other => Err(mlua::Error::runtime(format!("{what}: body must be a table or a string, got {}", other.type_name()))),
    }
}

/// Whether `href` (as a pool would resolve it) lands under `/sim/`, the simulator's control API
/// (calls, faults, passwords of every account; the embedded simulator is on the pool's origin
/// and asks no token). Paths are compared the way a lenient server might read them: percent-
/// decoded (repeatedly), `\` as `/`, dot segments resolved, empty segments dropped, any case.
/// A real pool has no `/sim/`, so nothing a script needs is refused.
pub(crate) fn reaches_simulator_control(href: &str) -> bool {
    let base = url::Url::parse("http://pool.invalid/").expect("a valid base");
    let Ok(url) = base.join(href) else {
        return false;
    };
    // As the simulator routes it (raw segments, any case, empty ones dropped) and as a lenient
    // server might decode it: `sim/…%2f..%2f…` is under /sim/ for the first, not the second.
    let raw_first = url.path().split('/').find(|s| !s.is_empty());
    if raw_first.is_some_and(|s| s.eq_ignore_ascii_case("sim")) {
        return true;
    }
    let mut path = url.path().to_string();
    for _ in 0..4 {
        let decoded = percent_decode(&path);
        if decoded == path {
            break;
        }
        path = decoded;
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split(['/', '\\']) {
        match seg.trim() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.first().is_some_and(|s| s.eq_ignore_ascii_case("sim"))
}

/// `%XX` decoded (bytes that do not form UTF-8 are kept lossily: only the shape matters here).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `{status, body, headers}`; a JSON body is decoded when `decode_json`.
fn reply_table(lua: &Lua, status: u16, headers: &reqwest::header::HeaderMap, body: &[u8], decode_json: bool) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("status", status)?;
    let h = lua.create_table()?;
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            h.set(name.as_str(), v)?;
        }
    }
    t.set("headers", h)?;
    if !body.is_empty() {
        let json = if decode_json { serde_json::from_slice::<serde_json::Value>(body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)).ok() } else { None };
        match json {
            Some(v) => t.set("body", lua.to_value(&v)?)?,
            None => t.set("body", lua.create_string(body)?)?,
        }
    }
    Ok(t)
}

/// The request a script would send, as offline mode records it (the body as text).
fn would_send(script: &str, via: &'static str, method: &Method, url: String, body: Option<(String, Bytes)>) -> Request {
    let body = body.map(|(_, b)| String::from_utf8_lossy(&b).into_owned());
    Request { script: script.to_string(), via, method: method.to_string(), url, body }
}

/// Offline: records the request, reports it, and answers it from `OfflineNet`.
fn offline(lua: &Lua, env: &ScriptEnv, net: &OfflineNet, req: Request) -> mlua::Result<Table> {
    let via = req.via;
    env.emit(ScriptOutput::Request { script: req.script.clone(), via, method: req.method.clone(), url: req.url.clone(), body: req.body.clone() });
    let answer = net.answer(req);
    let t = lua.create_table()?;
    t.set("status", answer.status)?;
    t.set("headers", lua.create_table()?)?;
    match answer.body {
        serde_json::Value::Null => {}
        serde_json::Value::String(s) if via == "http" => t.set("body", s)?,
        v => t.set("body", lua.to_value(&v)?)?,
    }
    Ok(t)
}

/// `agent.ucwa.one`, `.many`, `.date`: reading what pools send whatever its shape (a member
/// the documentation shows as one object may come as an array of one; dates in .NET form).
fn shape_helpers(lua: &Lua, ucwa: &Table) -> mlua::Result<()> {
    // A list: a table whose first element is set (JSON arrays), or an empty table.
    fn is_list(t: &Table) -> mlua::Result<bool> {
        Ok(t.raw_get::<Value>(1)? != Value::Nil || t.clone().pairs::<Value, Value>().next().is_none())
    }
    ucwa.set(
        "one",
        lua.create_function(|_, v: Value| match &v {
            Value::Table(t) if is_list(t)? => t.raw_get::<Value>(1),
            _ => Ok(v),
        })?,
    )?;
    ucwa.set(
        "many",
        lua.create_function(|lua, v: Value| match v {
            Value::Nil => lua.create_table(),
            Value::Table(t) if is_list(&t)? => Ok(t),
            other => lua.create_sequence_from([other]),
        })?,
    )?;
    ucwa.set(
        "date",
        lua.create_function(|_, v: Value| {
            Ok(match v {
                Value::String(s) => s.to_str().ok().and_then(|s| crate::date::parse_ms(&s)),
                _ => None,
            })
        })?,
    )?;
    Ok(())
}

pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let env = &ctx.env;
    let script: Arc<str> = ctx.name.clone();
    let ucwa = lua.create_table()?;
    for (name, method, takes_body) in [("get", Method::GET, false), ("post", Method::POST, true), ("put", Method::PUT, true), ("delete", Method::DELETE, false)]
    {
        let env = env.clone();
        let script = script.clone();
        let redactor = ctx.redactor.clone();
        let f = lua.create_async_function(move |lua, (href, body, content_type): (String, Value, Option<String>)| {
            let env = env.clone();
            let method = method.clone();
            let script = script.clone();
            let redactor = redactor.clone();
            let l = lua.clone();
            let run = async move {
                let what = format!("agent.ucwa.{name}");
                if url::Url::parse(&href).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
                    return Err(mlua::Error::runtime(format!(
                        "{what}: hrefs with credentials (user:password@host) are refused: the agent's token is the only credential sent to the pool"
                    )));
                }
                if reaches_simulator_control(&href) {
                    return Err(mlua::Error::runtime(format!(
                        "{what}: {href} is the simulator's control API (/sim/), which scripts cannot call: it would let a script fault or reset the pool for every account"
                    )));
                }
                if let Net::Offline(net) = &env.net {
                    let body = if takes_body { body_of(&lua, body, content_type, &what)? } else { None };
                    return offline(&lua, &env, net, would_send(&script, "ucwa", &method, href, body));
                }
                let session = env.session.get().ok_or_else(|| mlua::Error::runtime(format!("{what}: the agent is not signed in")))?;
                let body = if takes_body { body_of(&lua, body, content_type, &what)? } else { None };
                let timeout = env.settings().limits.handler_timeout;
                let target = href.clone();
                let started = std::time::Instant::now();
                let traced = super::trace::recording(&lua).then(|| method.to_string());
                let reply = env.on_io(async move { session.send(method, &target, body, Some(timeout)).await }).await?;
                if let Some(method) = traced {
                    let (status, error) = match &reply {
                        Ok(r) => (Some(r.status), None),
                        Err(e) => (None, Some(redactor.redact(&e.to_string()).into_owned())),
                    };
                    let us = started.elapsed().as_micros() as u64;
                    // The path (and query): the pool is the session's.
                    let target = match url::Url::parse(&href) {
                        Ok(u) => u[url::Position::BeforePath..].to_string(),
                        Err(_) => href.clone(),
                    };
                    let target = redactor.redact(&target).into_owned();
                    super::trace::record(&lua, |at_us| super::trace::Step::Request {
                        at_us: at_us.saturating_sub(us),
                        via: "ucwa".into(),
                        method,
                        target,
                        status,
                        error,
                        us,
                    });
                }
                let reply = reply.map_err(|e| mlua::Error::runtime(format!("{what}({href}): {e}")))?;
                reply_table(&lua, reply.status, &reply.headers, &reply.body, true)
            };
            async move { outcome(&l, run.await) }
        })?;
        ucwa.set(name, f)?;
    }
    shape_helpers(lua, &ucwa)?;
    let app = env.application.clone();
    ucwa.set(
        "application",
        lua.create_function(move |_, ()| app.get().ok_or_else(|| mlua::Error::runtime("agent.ucwa.application: the agent is not signed in")))?,
    )?;
    agent.set("ucwa", ucwa)?;

    let http = lua.create_table()?;
    let env = env.clone();
    let redactor = ctx.redactor.clone();
    let request = lua.create_async_function(move |lua, spec: Table| {
        let env = env.clone();
        let script = script.clone();
        let redactor = redactor.clone();
        let l = lua.clone();
        let run = async move {
            const WHAT: &str = "agent.http.request";
            let url: String = spec.get("url").map_err(|_| mlua::Error::runtime(format!("{WHAT}: `url` (a string) is required")))?;
            let url = url::Url::parse(&url).map_err(|e| mlua::Error::runtime(format!("{WHAT}: bad url {url:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(mlua::Error::runtime(format!("{WHAT}: only http and https URLs, got {}", url.scheme())));
            }
            let settings = env.settings();
            let enforce = match &env.net {
                Net::Offline(net) => net.enforce_allowlist,
                Net::Live => true,
            };
            if enforce && !settings.http_allowed(&url) {
                return Err(mlua::Error::runtime(format!(
                    "{WHAT}: {} is not in scripts.http_allow; add it to config.toml to allow it",
                    url.host_str().unwrap_or("?")
                )));
            }
            let method: Option<String> = spec.get("method")?;
            let method = Method::from_bytes(method.as_deref().unwrap_or("GET").to_ascii_uppercase().as_bytes())
                .map_err(|_| mlua::Error::runtime(format!("{WHAT}: bad method")))?;
            let timeout_ms: Option<f64> = spec.get("timeout")?;
            let timeout = match timeout_ms {
                None => settings.limits.handler_timeout,
                Some(ms) if (1.0..=MAX_TIMEOUT_MS).contains(&ms) => Duration::from_secs_f64(ms / 1000.0),
                Some(ms) => return Err(mlua::Error::runtime(format!("{WHAT}: `timeout` must be between 1 and {MAX_TIMEOUT_MS} ms, got {ms}"))),
            };
            if let Net::Offline(net) = &env.net {
                let body = body_of(&lua, spec.get("body")?, None, WHAT)?;
                return offline(&lua, &env, net, would_send(&script, "http", &method, url.to_string(), body));
            }
            let traced = super::trace::recording(&lua).then(|| method.to_string());
            let mut req = env.http().request(method, url.clone()).timeout(timeout);
            let mut has_content_type = false;
            if let Some(headers) = spec.get::<Option<Table>>("headers")? {
                for pair in headers.pairs::<String, String>() {
                    let (k, v) = pair?;
                    if let Some(h) = FORBIDDEN_HEADERS.iter().find(|h| k.eq_ignore_ascii_case(h)) {
                        return Err(mlua::Error::runtime(format!("{WHAT}: the `{h}` header is set by the agent, not by scripts")));
                    }
                    has_content_type |= k.eq_ignore_ascii_case("content-type");
                    req = req.header(k, v);
                }
            }
            if let Some((ct, bytes)) = body_of(&lua, spec.get("body")?, None, WHAT)? {
                if !has_content_type {
                    req = req.header("content-type", ct);
                }
                req = req.body(bytes);
            }
            // The answer is read in Rust: held to the script's memory limit as it arrives.
            let cap = super::bounded::memory_limit(&lua);
            let started = std::time::Instant::now();
            let sent = env
                .on_io(async move {
                    let mut resp = req.send().await?;
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let mut body = Vec::new();
                    while let Some(chunk) = resp.chunk().await? {
                        if body.len() + chunk.len() > cap {
                            return Ok(None);
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(Some((status, headers, body)))
                })
                .await?;
            if let Some(method) = traced {
                // Host only, as in the log: webhook URLs often carry their secret in the path or query.
                let (status, error) = match &sent {
                    Ok(Some((status, _, _))) => (Some(*status), None),
                    Ok(None) => (None, Some("the answer is larger than the script's memory limit".to_string())),
                    Err(e) => (None, Some(without_url(e))),
                };
                let us = started.elapsed().as_micros() as u64;
                let target = url.host_str().unwrap_or("").to_string();
                super::trace::record(&lua, |at_us| super::trace::Step::Request {
                    at_us: at_us.saturating_sub(us),
                    via: "http".into(),
                    method,
                    target,
                    status,
                    error: error.map(|e| redactor.redact(&e).into_owned()),
                    us,
                });
            }
            let sent = sent.map_err(|e: reqwest::Error| mlua::Error::runtime(format!("{WHAT}({url}): {}", without_url(&e))))?;
            let Some((status, headers, body)) = sent else {
                return Err(mlua::Error::runtime(format!(
                    "{WHAT}({}): the answer is larger than the script's memory limit ({cap} bytes; scripts.memory_limit_mb)",
                    url.host_str().unwrap_or("")
                )));
            };
            // Host only: webhook URLs often carry their secret in the path or query.
            tracing::debug!(script = %script, host = url.host_str().unwrap_or(""), status, "agent.http.request");
            reply_table(&lua, status, &headers, &body, false)
        };
        async move { outcome(&l, run.await) }
    })?;
    http.set("request", request)?;
    agent.set("http", http)?;
    // The Rust side returns (ok, value or message); these wrappers raise the message as a plain
    // string at the script's line, so `pcall` gives scripts a string, as Lua errors usually are.
    // They run on the globals as the state was built: this area is installed at first use,
    // after the script's top level, which may have reassigned them.
    let globals: Table = lua.named_registry_value(GLOBALS)?;
    lua.load(RAISE_WRAPPERS).set_name("=agent").set_environment(globals).call::<()>(agent.clone())?;
    Ok(())
}

/// The longest `timeout` a request may ask for: one hour.
const MAX_TIMEOUT_MS: f64 = 3_600_000.0;

/// Headers that decide where and how a request travels: a script setting them could reach
/// another virtual host than the allowlisted one, or desynchronise the connection.
const FORBIDDEN_HEADERS: [&str; 8] = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "TE", "Keep-Alive", "Proxy-Connection"];

/// Where the globals the raising wrappers take are kept as the state was built.
const GLOBALS: &str = "ucwa.net_globals";

/// Keeps the globals the raising wrappers will take (before the script runs).
pub(crate) fn keep_globals(lua: &Lua) -> mlua::Result<()> {
    const TAKE: &str = "return { coroutine = { isyieldable = coroutine.isyieldable }, error = error, ipairs = ipairs }";
    let globals: Table = lua.load(TAKE).set_name("=agent").call(())?;
    lua.set_named_registry_value(GLOBALS, globals)
}

const RAISE_WRAPPERS: &str = r#"
local agent = ...
local isyieldable, error = coroutine.isyieldable, error
local function raising(f, name)
  return function(...)
    -- A request suspends its caller until the answer comes: only handlers and timers can be
    -- suspended, a script's top level cannot.
    if not isyieldable() then
      error(name .. ": only in handlers and timers, not at a script's top level (move the call into agent.on(…) or agent.after(0, …))", 2)
    end
    local ok, v = f(...)
    if not ok then error(v, 2) end
    return v
  end
end
for _, name in ipairs({"get", "post", "put", "delete"}) do agent.ucwa[name] = raising(agent.ucwa[name], "agent.ucwa." .. name) end
agent.http.request = raising(agent.http.request, "agent.http.request")
"#;

/// `(true, value)` or `(false, message)` for the raising wrappers.
fn outcome(lua: &Lua, r: mlua::Result<Table>) -> mlua::Result<(bool, Value)> {
    match r {
        Ok(t) => Ok((true, Value::Table(t))),
        Err(e) => {
            let msg = match e {
                mlua::Error::RuntimeError(m) => m,
                other => other.to_string(),
            };
            Ok((false, Value::String(lua.create_string(msg)?)))
        }
    }
}

/// reqwest's error text, without the URL it repeats.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::reaches_simulator_control as sim;

    #[test]
    fn the_simulator_control_api_is_recognised_however_it_is_spelt() {
        for href in [
            "/sim/v1/faults",
            "/SIM/v1/faults",
            "/Sim/V1/calls/3",
            "/.//sim//v1//counters",
            "/ucwa/../sim/v1/settings",
            "/ucwa/%2e%2e/sim/v1/settings",
            "/%73im/v1/faults",
            "/%2573im/v1/faults",
            "/ucwa/%2F..%2Fsim/v1/users/b",
            "\\sim\\v1\\faults",
            "http://127.0.0.1:1/sim/v1/faults",
            "./sim/v1/faults",
            "/sim",
            "/sim/v1/contacts/sip:evil@x%2f..%2f..%2f..%2f../presence",
            "/sim/v1/contacts/x%5c..%5c..%5c../presence",
        ] {
            assert!(sim(href), "{href}");
        }
        for href in ["/ucwa/oauth/v1/applications/1/me", "/simulation/x", "/ucwa/sim/v1", "/ucwa/oauth/v1/applications/1/people/sim", "/"] {
            assert!(!sim(href), "{href}");
        }
    }
}
