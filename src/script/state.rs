//! Saving `agent.state`: one database row per top-level key, and a commit writes only the keys
//! that changed. A 20 MB string kept in state next to a counter bumped per event costs the
//! counter's few bytes per commit, not 20 MB: a key holding the very same Lua string as at the
//! last commit is not even serialised again (Lua strings are immutable; the mark keeps the
//! string alive, so its address cannot be reused by another).
//!
//! What is saved can be read back: values are checked before they are written (only nil,
//! booleans, numbers, strings and tables; no cycles; at most `MAX_DEPTH` levels), and an error
//! names the key path at fault (`agent.state.calls.open: …`).

use mlua::{Lua, LuaString, Table, Value};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::hash::{Hash, Hasher};

/// The deepest nesting a value in `agent.state` may have (JSON readers refuse deeper ones:
/// serde_json stops at 128).
pub(crate) const MAX_DEPTH: usize = 100;

/// What the last commit wrote for one key.
struct Mark {
    /// The key's value when it was a string: the same string again is unchanged.
    string: Option<LuaString>,
    hash: u64,
    bytes: usize,
}

/// The keys as last committed (for one version of a script: a new version starts empty, and
/// its first commit writes every key).
#[derive(Default)]
pub(crate) struct Saved {
    keys: HashMap<String, Mark>,
    written_once: bool,
}

/// What a commit writes.
pub(crate) struct Delta {
    /// Replace every stored key of the script (the first commit of a version).
    pub replace_all: bool,
    pub set: Vec<(String, String)>,
    pub removed: Vec<String>,
    /// The JSON size of the whole state.
    pub bytes: usize,
    marks: Vec<(String, Mark)>,
}

impl Delta {
    pub(crate) fn is_empty(&self) -> bool {
        !self.replace_all && self.set.is_empty() && self.removed.is_empty()
    }
}

impl Saved {
    /// Compares `agent.state` now with the last commit; a state over `max_bytes` of JSON is an
    /// error (found while serialising, so an oversized value is never built whole).
    pub(crate) fn diff(&self, lua: &Lua, max_bytes: usize) -> Result<Delta, String> {
        let agent: Table = lua.globals().raw_get("agent").map_err(|e| format!("the agent table is gone: {e}"))?;
        let state = match agent.raw_get::<Value>("state").map_err(|e| e.to_string())? {
            Value::Nil => None,
            Value::Table(t) => Some(t),
            other => return Err(format!("agent.state must be a table, got {}", other.type_name())),
        };
        let mut delta = Delta { replace_all: !self.written_once, set: Vec::new(), removed: Vec::new(), bytes: 2, marks: Vec::new() };
        let mut seen = HashSet::new();
        if let Some(state) = state {
            let mut stack = vec![state.to_pointer()];
            let mut done = HashMap::new();
            for pair in state.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| e.to_string())?;
                let key = match k {
                    Value::String(s) => s.to_str().map_err(|_| "agent.state: keys must be UTF-8 strings".to_string())?.to_string(),
                    other => return Err(format!("agent.state: keys must be strings, got a {} key", other.type_name())),
                };
                let path = format!("agent.state.{key}");
                let prior = self.keys.get(&key);
                if let (Value::String(s), Some(Mark { string: Some(old), bytes, .. })) = (&v, prior) {
                    if s.to_pointer() == old.to_pointer() && !delta.replace_all {
                        delta.bytes += key.len() + 4 + bytes;
                        seen.insert(key);
                        continue;
                    }
                }
                check(&v, &|| path.clone(), 1, &mut stack, &mut done)?;
                let room = max_bytes.saturating_sub(delta.bytes + key.len() + 4);
                let json = super::bounded::json_within(&v, room).map_err(|e| match e {
                    None => format!("agent.state is over scripts.state_max_bytes ({max_bytes} bytes of JSON) at {path}; changes to it are not saved"),
                    Some(e) => format!("{path}: {e}"),
                })?;
                let mut h = DefaultHasher::new();
                json.hash(&mut h);
                let hash = h.finish();
                delta.bytes += key.len() + 4 + json.len();
                let string = match &v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                };
                if delta.replace_all || prior.is_none_or(|m| m.hash != hash || m.bytes != json.len()) {
                    delta.marks.push((key.clone(), Mark { string, hash, bytes: json.len() }));
                    delta.set.push((key.clone(), json));
                } else if string.is_some() {
                    // Same text in a new string: remember the new one, write nothing.
                    delta.marks.push((key.clone(), Mark { string, hash, bytes: json.len() }));
                }
                seen.insert(key);
            }
        }
        delta.removed = self.keys.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        Ok(delta)
    }

    /// The delta was written.
    pub(crate) fn applied(&mut self, delta: Delta) {
        self.written_once = true;
        if delta.replace_all {
            self.keys.clear();
        }
        for k in delta.removed {
            self.keys.remove(&k);
        }
        for (k, m) in delta.marks {
            self.keys.insert(k, m);
        }
    }
}

/// Refuses what JSON cannot hold or cannot give back: functions and other non-data, strings
/// that are not UTF-8, cycles, nesting deeper than `MAX_DEPTH`, and tables JSON would change:
/// one with both list items and named keys, a list with gaps, number keys that are not a list
/// (JSON keeps a list's items, or string keys). `done` holds the tables already checked (a table may appear many times).
fn check(v: &Value, path: &dyn Fn() -> String, depth: usize, stack: &mut Vec<*const c_void>, done: &mut HashMap<*const c_void, usize>) -> Result<(), String> {
    match v {
        // JSON has text only: bytes that are not UTF-8 would be written as a list of numbers,
        // and come back as a table.
        Value::String(s) if s.to_str().is_err() => {
            Err(format!("{}: a string that is not UTF-8 text cannot be saved (JSON would give back a list of its bytes)", path()))
        }
        Value::Nil | Value::Boolean(_) | Value::Integer(_) | Value::String(_) | Value::LightUserData(_) => Ok(()),
        Value::Number(n) if n.is_finite() => Ok(()),
        Value::Number(n) => Err(format!("{}: {n} cannot be saved (JSON has no NaN or infinity)", path())),
        Value::Table(t) => {
            if depth > MAX_DEPTH {
                return Err(format!("{}: nested deeper than {MAX_DEPTH} levels; agent.state cannot keep it", path()));
            }
            let ptr = t.to_pointer();
            if stack.contains(&ptr) {
                return Err(format!("{}: refers back to a table that contains it (a cycle); agent.state cannot keep it", path()));
            }
            // Checked before at this depth or deeper down: its subtree fits here too.
            if done.get(&ptr).is_some_and(|&d| d >= depth) {
                return Ok(());
            }
            stack.push(ptr);
            let len = t.raw_len() as i64;
            let (mut keys, mut named) = (0usize, 0usize);
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| format!("{}: {e}", path()))?;
                keys += 1;
                // The path is only spelled out when there is an error to name.
                match &k {
                    Value::String(s) => {
                        named += 1;
                        check(&v, &|| format!("{}.{}", path(), s.to_string_lossy()), depth + 1, stack, done)?;
                    }
                    Value::Integer(i) if (1..=len).contains(i) => check(&v, &|| format!("{}[{i}]", path()), depth + 1, stack, done)?,
                    other => {
                        let key = other.to_string().unwrap_or_else(|_| other.type_name().to_string());
                        return Err(format!(
                            "{}: the key {key} cannot be saved: JSON keeps a list (keys 1..n, no gaps) or string keys, so it would come back otherwise",
                            path()
                        ));
                    }
                }
            }
            if named > 0 && named != keys {
                return Err(format!("{}: a table with both list items and named keys cannot be saved (JSON would keep only one kind)", path()));
            }
            if named == 0 && keys as i64 != len {
                return Err(format!("{}: a list with gaps cannot be saved (JSON would drop what follows the first gap)", path()));
            }
            stack.pop();
            done.insert(ptr, depth);
            Ok(())
        }
        other => Err(format!("{}: a {} cannot be saved; agent.state holds only nil, booleans, numbers, strings and tables", path(), other.type_name())),
    }
}
