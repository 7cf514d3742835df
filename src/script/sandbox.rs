//! A sandboxed Lua state (allowlist): `table`, `string`, `math`, `utf8`, `coroutine`, and of `os`
//! only `time`, `clock` and `date`. No `io`, `package`/`require`, `debug`, `dofile`, `loadfile`,
//! `string.dump`; `load` takes text chunks only. Every state has a memory limit, and a hook
//! that stops a handler past its instruction budget or wall-clock deadline.

use super::budget::{Budget, Limits, HOOK_EVERY};
use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, VmState};
use std::sync::Arc;

/// Where the host keeps Lua's own `setmetatable` (for its metatables, which have no `__gc`).
pub(crate) const RAW_SETMETATABLE: &str = "ucwa.raw_setmetatable";

/// A fresh sandboxed state with the limits installed.
pub(crate) fn new_state(limits: &Limits) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE | StdLib::OS;
    // A few coroutines kept for reuse: every handler call runs in one (`call_async`), and
    // making a new one per call costs more than a trivial handler.
    let lua = Lua::new_with(libs, LuaOptions::new().thread_pool_size(8))?;
    lua.set_memory_limit(limits.memory_bytes)?;
    // Generational collection: every event leaves a short-lived table (and its entry in the
    // lazy fields' weak table) behind; young collections free them without re-marking the
    // script's long-lived state each cycle, as the incremental mode does (BENCHMARKS.md).
    lua.gc_set_mode(mlua::state::GcMode::Generational(Default::default()));
    // (Shared: a run of events dispatched in one entry into Lua arms it between handlers.)
    lua.set_app_data(Arc::new(Budget::new(limits.memory_bytes)));
    // A global hook: a per-thread hook would miss the coroutines async handlers run in.
    lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), |lua, debug| match lua.app_data_ref::<Arc<Budget>>().map(|b| b.check()) {
        // Where the script was when the limit stopped it (a loop's line), when Lua knows.
        Some(Err(why)) => {
            let line = debug.current_line().unwrap_or(0);
            let src = debug.source().short_src.map(|s| s.into_owned()).unwrap_or_default();
            Err(mlua::Error::runtime(if line > 0 && !src.is_empty() && !src.starts_with('[') {
                format!("{why}, stopped at {src}:{line}")
            } else {
                why.to_string()
            }))
        }
        _ => Ok(VmState::Continue),
    })?;
    restrict_globals(&lua)?;
    super::strlib::register(&lua)?;
    // mlua's shared array metatable: a script must not be able to add `__gc` to it.
    lua.array_metatable().raw_set("__metatable", false)?;
    Ok(lua)
}

/// Cuts the standard library down to the allowlist and closes the ways around the limits.
fn restrict_globals(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    lua.set_named_registry_value(RAW_SETMETATABLE, g.raw_get::<mlua::Function>("setmetatable")?)?;
    let exhausted = lua.create_function(|lua, ()| Ok(lua.app_data_ref::<Arc<Budget>>().is_some_and(|b| b.exhausted())))?;
    g.set("__limit_hit", exhausted)?;
    let mark = lua.create_function(|lua, ()| {
        if let Some(b) = lua.app_data_ref::<Arc<Budget>>() {
            b.exhaust();
        }
        Ok(())
    })?;
    g.set("__limit_mark", mark)?;
    // Work a C function does in one call, charged before it starts: a loop in C never meets the hook.
    let charge = lua.create_function(|lua, n: f64| {
        let Some(b) = lua.app_data_ref::<Arc<Budget>>() else {
            return Ok(());
        };
        let n = if n.is_finite() && n > 0.0 {
            n.min(u64::MAX as f64) as u64
        } else if n > 0.0 {
            u64::MAX
        } else {
            0
        };
        if n > b.available() {
            b.exhaust();
            return Err(mlua::Error::runtime("instruction limit exceeded (scripts.instruction_limit)"));
        }
        b.spend(n);
        Ok(())
    })?;
    g.set("__charge", charge)?;
    // Whether a table has a `__len` metamethod (read raw: `__metatable` cannot hide it).
    let has_len = lua.create_function(|_, v: mlua::Value| {
        Ok(match v {
            mlua::Value::Table(t) => t.metatable().is_some_and(|mt| mt.raw_get::<mlua::Value>("__len").is_ok_and(|l| !l.is_nil())),
            _ => false,
        })
    })?;
    g.set("__has_len", has_len)?;
    g.set("__memory_limit", limits_memory(lua))?;
    g.set("__declares_close", lua.create_function(|_, f: mlua::Function| Ok(super::tbc::declares_close(&f)))?)?;
    g.set("__close_refused", super::tbc::REFUSED)?;
    lua.load(SANDBOX_PRELUDE).set_name("=sandbox").exec()?;
    Ok(())
}

/// Runs once per state, before the script, with the full (already reduced) library.
const SANDBOX_PRELUDE: &str = r#"
local os_time, os_clock, os_date = os.time, os.clock, os.date
os = { time = os_time, clock = os_clock, date = os_date }
dofile, loadfile, require, package, debug, io = nil, nil, nil, nil, nil, nil
string.dump = nil

-- A limit that stopped the handler cannot be caught: protected calls re-raise it. Running out
-- of memory is a limit too ("not enough memory" is Lua's own message for it). Every function
-- that runs Lua code in protected mode is covered: pcall, xpcall, coroutine.resume and close,
-- and load (whose reader function runs protected).
local limit_hit, limit_mark, charge, memory_limit, has_len = __limit_hit, __limit_mark, __charge, __memory_limit, __has_len
local declares_close, close_refused = __declares_close, __close_refused
__limit_hit, __limit_mark, __charge, __memory_limit, __has_len, __declares_close, __close_refused = nil, nil, nil, nil, nil, nil, nil
local raw_pcall, raw_xpcall, pack, unpack = pcall, xpcall, table.pack, table.unpack
local type, tostring, tonumber, rawget, error, format, select = type, tostring, tonumber, rawget, error, string.format, select
local function is_memory_error(e)
  return e == "not enough memory" or (type(e) == "userdata" and tostring(e):find("memory error", 1, true) ~= nil)
end
local function pass(r)
  if not r[1] then
    if is_memory_error(r[2]) then limit_mark() end
    if limit_hit() then error(r[2], 0) end
  end
  return unpack(r, 1, r.n)
end
pcall = function(...) return pass(pack(raw_pcall(...))) end
xpcall = function(...) return pass(pack(raw_xpcall(...))) end
local raw_resume, raw_close = coroutine.resume, coroutine.close
coroutine.resume = function(...) return pass(pack(raw_resume(...))) end
coroutine.close = function(...) return pass(pack(raw_close(...))) end

-- Text chunks only: a precompiled (binary) chunk can break the VM's safety.
local raw_load = load
local function loaded(f, err)
  -- (tbc.rs says why: a `__close` would run outside every limit.)
  if f ~= nil and declares_close(f) then return nil, close_refused end
  if f == nil then
    if is_memory_error(err) then limit_mark() end
    if limit_hit() then error(err, 0) end
  end
  return f, err
end
load = function(chunk, name, _mode, ...)
  if select('#', ...) > 0 then return loaded(raw_load(chunk, name, "t", ...)) end
  return loaded(raw_load(chunk, name, "t"))
end

-- Finalizers run with every hook off (Lua's rule), so a `__gc` would escape every limit.
local raw_setmetatable = setmetatable
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: a metatable with a `__gc` key is not allowed (finalizers run outside the script's limits)", 2)
  end
  return raw_setmetatable(t, mt)
end

-- Functions that loop in C for as long as their arguments say: their work is charged to the
-- instruction limit (and their result held to the memory limit) before they start. Numbers
-- may come as strings ("1e12"): the C functions convert them, so the charges do too. The
-- originals are called as fields of `lib`, so their argument errors name them as Lua does.
local lib = { rep = string.rep, move = table.move, concat = table.concat, unpack = table.unpack,
  insert = table.insert, remove = table.remove, sort = table.sort }
local function count(i, j)
  i, j = tonumber(i), tonumber(j)
  if i == nil or j == nil or j < i then return 0 end
  return (j * 1.0) - (i * 1.0) + 1
end
local function len(t) return type(t) == "table" and #t or 0 end
string.rep = function(s, n, sep)
  local times = tonumber(n)
  if times and times > 0 then
    local size = #tostring(s) * (times * 1.0) + (sep and #tostring(sep) * (times - 1.0) or 0)
    if size > memory_limit then
      error(format("string.rep: the result (%.0f bytes) would exceed scripts.memory_limit_mb", size), 2)
    end
    -- A copy per repetition: about what 16 VM instructions cost.
    charge(times / 16)
  end
  local r = lib.rep(s, n, sep)
  return r
end
table.move = function(a1, f, e, t, a2)
  charge(count(f, e))
  local r = lib.move(a1, f, e, t, a2)
  return r
end
table.concat = function(list, sep, i, j)
  charge(count(i or 1, j or len(list)))
  local r = lib.concat(list, sep, i, j)
  return r
end
table.unpack = function(list, i, j)
  charge(count(i or 1, j or len(list)))
  return lib.unpack(list, i, j)
end
-- Shifting at a position loops in C over the length `__len` gives, asked again inside the
-- call: a `__len` that answers differently the second time would escape the charge.
local function no_len(list, name)
  if has_len(list) then
    error("table." .. name .. ": a position in a table with a __len metamethod is not supported (its length is asked again inside the call)", 3)
  end
end
table.insert = function(list, ...)
  if select('#', ...) >= 2 then
    no_len(list, "insert")
    charge(count((...), len(list)))
  end
  lib.insert(list, ...)
end
table.remove = function(list, pos, ...)
  if pos ~= nil then
    no_len(list, "remove")
    charge(count(pos, len(list)))
  end
  local r = lib.remove(list, pos, ...)
  return r
end
table.sort = function(list, ...)
  charge(len(list))
  lib.sort(list, ...)
end
local raw_collect = collectgarbage
collectgarbage = function(opt, ...)
  if opt == nil or opt == "collect" or opt == "count" or opt == "step" then return raw_collect(opt, ...) end
  error("collectgarbage('" .. tostring(opt) .. "') is not available to scripts", 2)
end
"#;

fn limits_memory(lua: &Lua) -> f64 {
    lua.app_data_ref::<Arc<Budget>>().map_or(f64::MAX, |b| b.memory_limit() as f64)
}
