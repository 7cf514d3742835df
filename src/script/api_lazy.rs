//! Areas of the `agent` table installed at first use. An agent of many accounts holds a Lua
//! state per script per account, and most scripts never call agent-actions (about 40 KiB of
//! Lua per state) or `agent.ucwa`/`agent.http` (about 10 KiB): BENCHMARKS.md, "An idle
//! account's Lua state".
//!
//! Such an area's sub-tables (`agent.me`, `agent.ucwa`, …) are in `agent` from the start, as
//! the same table objects they will be, empty, behind one metatable (hidden: `__metatable` is
//! false) whose `__index`, `__newindex` and `__pairs` install the area first; installing fills
//! the tables and takes the metatable off. So `pairs(agent)`, `agent.me.presence`,
//! `pairs(agent.ucwa)`, a local alias taken at the top level, and a field set or replaced by the
//! script all behave as when the area was installed with the state. What tells the two apart:
//! `next`, `rawget` and `getmetatable` on such a table before its first use (empty, `false`).
//!
//! The area is installed on a private table standing for `agent` (its sub-tables are then
//! moved into the script's): what it reads of `agent` is the table as the state was built,
//! whatever the script replaced in its own `agent` since, as when it was installed first.

use super::ctx::{Register, ScriptCtx};
use mlua::{Function, Lua, Table, Value};
use std::sync::{Arc, Mutex};

/// The metatable of a table not yet filled: every use installs its area, then does what it did.
const STUB_METATABLE: &str = r#"
local install, pairs = ...
return {
  __metatable = false,
  __index = function(t, k) install(t) return t[k] end,
  __newindex = function(t, k, v) install(t) t[k] = v end,
  __pairs = function(t) install(t) return pairs(t) end,
}
"#;

/// `setmetatable` on a table not yet filled installs its area first: its own metatable is
/// protected, and the script may set one on the table as it could when the area came with the
/// state. (A tail call: an error still names the script's line.)
const SETMETATABLE: &str = r#"
local install, owner, setmetatable = ...
return function(t, mt)
  if owner[t] then install(t) end
  return setmetatable(t, mt)
end
"#;

/// Where a state keeps its `install` and the tables not yet filled (for `install_all`).
const INSTALL: &str = "ucwa.install_area";
const PENDING: &str = "ucwa.pending_areas";
/// `{ yield = coroutine.yield }` as the state was built, for mlua's async functions (`fill`).
const COROUTINE: &str = "ucwa.built_coroutine";

/// Installs every area not installed yet (`check` walks the whole `agent` table).
pub(crate) fn install_all(lua: &Lua) -> mlua::Result<()> {
    let install: Function = lua.named_registry_value(INSTALL)?;
    let owner: Table = lua.named_registry_value(PENDING)?;
    let pending = owner.pairs::<Table, Value>().filter_map(|p| p.map(|(t, at)| at.is_integer().then_some(t)).transpose()).collect::<mlua::Result<Vec<_>>>()?;
    for t in pending {
        install.call::<()>(t)?;
    }
    Ok(())
}

/// `v` as JSON (`bounded::json`), as it is once every area it holds is installed: the
/// serializer reads tables raw, and would find `agent.calls` empty before its first use.
/// Serialized first: a value that does not serialize (a function, a cycle, too deep, too big)
/// fails as it did, with no walk; one that does is walked for areas not yet installed (no
/// further than the serializer went), and serialized again if the walk installed one.
pub(crate) fn json(lua: &Lua, v: &Value, what: &str) -> mlua::Result<String> {
    let text = super::bounded::json(lua, v, what)?;
    if install_reachable(lua, v)? {
        return super::bounded::json(lua, v, what);
    }
    Ok(text)
}

/// How deep the serializer goes (mlua's recursion limit): a table deeper is not serialized.
const MAX_DEPTH: usize = 128;

/// Installs the area of every table not yet filled that `v` holds as a value, at any depth the
/// serializer reaches; whether it installed one. Nothing is walked once every area is in. The
/// walk holds a reference per level, not per entry (Lua's reference space ends near a million).
fn install_reachable(lua: &Lua, v: &Value) -> mlua::Result<bool> {
    let Value::Table(top) = v else { return Ok(false) };
    let Ok(owner) = lua.named_registry_value::<Table>(PENDING) else { return Ok(false) };
    if owner.pairs::<Value, Value>().next().is_none() {
        return Ok(false);
    }
    let install: Function = lua.named_registry_value(INSTALL)?;
    let mut seen = std::collections::HashSet::new();
    walk(top, 0, &owner, &install, &mut seen)
}

fn walk(t: &Table, depth: usize, owner: &Table, install: &Function, seen: &mut std::collections::HashSet<*const std::ffi::c_void>) -> mlua::Result<bool> {
    if depth > MAX_DEPTH || !seen.insert(t.to_pointer()) {
        return Ok(false);
    }
    let mut installed = false;
    if owner.raw_get::<Value>(t)?.is_integer() {
        install.call::<()>(t)?;
        installed = true;
    }
    t.for_each::<Value, Value>(|_, v| {
        if let Value::Table(inner) = v {
            installed |= walk(&inner, depth + 1, owner, install, seen)?;
        }
        Ok(())
    })?;
    Ok(installed)
}

/// What installs the lazy areas of one state.
pub(crate) struct Lazy {
    /// `install(t)`: installs the area `t` belongs to, if it is not yet.
    install: Function,
    /// `agent` as built (every area's fields and the empty tables): what a lazy area reads.
    built: Table,
    /// Each empty table → the area it belongs to (the position in `areas`); `false` while it is
    /// being installed, removed once filled.
    owner: Table,
    stub_metatable: Table,
    areas: Areas,
}

/// The lazy areas of a state, by position: each one's `register` and the tables it fills.
type Areas = Arc<Mutex<Vec<(Register, &'static [&'static str])>>>;

impl Lazy {
    pub(crate) fn new(lua: &Lua, ctx: &ScriptCtx) -> mlua::Result<Lazy> {
        let areas = Areas::default();
        let built = lua.create_table()?;
        let owner = lua.create_table()?;
        let (b, o, a, ctx) = (built.clone(), owner.clone(), areas.clone(), ctx.clone());
        let install = lua.create_function(move |lua, t: Table| install(lua, &t, &b, &o, &a, &ctx))?;
        let pairs: Function = lua.globals().raw_get("pairs")?;
        let stub_metatable: Table = lua.load(STUB_METATABLE).set_name("=agent").call((install.clone(), pairs))?;
        lua.set_named_registry_value(INSTALL, &install)?;
        lua.set_named_registry_value(PENDING, &owner)?;
        let setmetatable: Function = lua.globals().raw_get("setmetatable")?;
        let guarded: Function = lua.load(SETMETATABLE).set_name("=agent").call((install.clone(), owner.clone(), setmetatable))?;
        lua.globals().raw_set("setmetatable", guarded)?;
        let coroutine: Table = lua.load("return { yield = coroutine.yield }").set_name("=agent").call(())?;
        lua.set_named_registry_value(COROUTINE, coroutine)?;
        Ok(Lazy { install, built, owner, stub_metatable, areas })
    }

    /// Puts `register`'s tables in `agent`, empty, to be filled at first use.
    pub(crate) fn add(&self, lua: &Lua, agent: &Table, register: Register, tables: &'static [&'static str]) -> mlua::Result<()> {
        let mut list = self.areas.lock().unwrap_or_else(|p| p.into_inner());
        list.push((register, tables));
        for name in tables {
            let t = lua.create_table()?;
            t.set_metatable(Some(self.stub_metatable.clone()))?;
            self.owner.raw_set(&t, list.len() - 1)?;
            agent.raw_set(*name, t)?;
        }
        Ok(())
    }

    /// Keeps `agent` as built, for the lazy areas to read: call once every area is in.
    pub(crate) fn seal(&self, agent: &Table) -> mlua::Result<()> {
        for pair in agent.pairs::<Value, Value>() {
            let (k, v) = pair?;
            self.built.raw_set(k, v)?;
        }
        Ok(())
    }

    /// A function that installs the area `t` belongs to (if it is not yet).
    pub(crate) fn installer_of(&self, lua: &Lua, t: &Table) -> mlua::Result<Function> {
        let (install, t) = (self.install.clone(), t.clone());
        lua.create_function(move |_, ()| install.call::<()>(&t))
    }
}

/// Installs the area `t` belongs to, unless it is installed (or being installed) already.
fn install(lua: &Lua, t: &Table, built: &Table, owner: &Table, areas: &Areas, ctx: &ScriptCtx) -> mlua::Result<()> {
    let Value::Integer(at) = owner.raw_get::<Value>(t)? else {
        return Ok(());
    };
    let Some((register, names)) = areas.lock().unwrap_or_else(|p| p.into_inner()).get(at as usize).copied() else {
        return Ok(());
    };
    let tables = names.iter().map(|n| built.raw_get::<Table>(*n)).collect::<mlua::Result<Vec<_>>>()?;
    // Plain tables from here on (also to the area itself, while it installs). `owner` keeps
    // its keys, marked `false`, until the area is in: putting them back after a failure then
    // only changes values, which allocates nothing (the failure may be the memory limit).
    let stub_metatable = t.metatable();
    for t in &tables {
        owner.raw_set(t, false)?;
        t.set_metatable(None)?;
    }
    let done = fill(lua, register, names, &tables, built, ctx);
    for t in &tables {
        if done.is_ok() {
            owner.raw_set(t, Value::Nil)?;
        } else {
            // Left as it was (out of memory, say): the next use tries again.
            t.set_metatable(stub_metatable.clone())?;
            owner.raw_set(t, at)?;
        }
    }
    done
}

/// Runs `register` on a private `agent` reading the built one, then moves what it made of each
/// of `names` into `tables` (keys the script has set already stay the script's).
fn fill(lua: &Lua, register: Register, names: &[&str], tables: &[Table], built: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let private = lua.create_table()?;
    let reads = lua.create_table()?;
    reads.raw_set("__index", built)?;
    private.set_metatable(Some(reads))?;
    // mlua makes each async function (`agent.ucwa.get`, …) with the global `coroutine.yield`
    // as it finds it: the one the state was built with, not what the script left there.
    let globals = lua.globals();
    let scripts: Value = globals.raw_get("coroutine")?;
    globals.raw_set("coroutine", lua.named_registry_value::<Table>(COROUTINE)?)?;
    let registered = register(lua, &private, ctx);
    globals.raw_set("coroutine", scripts)?;
    registered?;
    for (name, t) in names.iter().zip(tables) {
        let made: Table = private.raw_get(*name)?;
        for pair in made.pairs::<Value, Value>() {
            let (k, v) = pair?;
            if t.raw_get::<Value>(&k)?.is_nil() {
                t.raw_set(k, v)?;
            }
        }
        if made.metatable().is_some() {
            t.set_metatable(made.metatable())?;
        }
        // The area's own functions that read `agent.<name>` later read the script's table.
        private.raw_set(*name, t)?;
    }
    Ok(())
}
