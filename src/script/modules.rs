//! `require(name)`: shared code for scripts, from `<scripts dir>/lib/<name>.lua` (`a.b` →
//! `lib/a/b.lua`). A module is text only, runs in the requiring script's own sandbox under its
//! limits, once per script version (the result is kept, as Lua's `require` does), and is never
//! a script on its own. The modules a version required are recorded so that saving one reloads
//! every script that uses it.

use mlua::{chunk::ChunkMode, Lua, Table, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The folder of modules under a scripts directory.
pub const LIB_DIR: &str = "lib";

/// Modules one script version may require; a module file's largest size.
const MAX_MODULES: usize = 100;
const MAX_MODULE_BYTES: u64 = 1 << 20;

/// The module names a script version required (also those required later, from handlers).
pub type Required = Arc<Mutex<BTreeSet<String>>>;

/// `hours` → `lib/hours.lua`, `util.text` → `lib/util/text.lua`; None for anything else.
pub(crate) fn module_file(scripts_dir: &Path, name: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = name.split('.').collect();
    let ok = parts.iter().all(|p| !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if !ok || parts.len() > 4 {
        return None;
    }
    let mut path = scripts_dir.join(LIB_DIR);
    for p in &parts[..parts.len() - 1] {
        path.push(p);
    }
    path.push(format!("{}.lua", parts[parts.len() - 1]));
    Some(path)
}

/// The module name of a file under `<scripts dir>/lib/` (the reverse of `module_file`).
pub(crate) fn module_name(scripts_dir: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(scripts_dir.join(LIB_DIR)).ok()?;
    if rel.extension().and_then(|e| e.to_str()) != Some("lua") {
        return None;
    }
    let mut parts: Vec<String> = rel.parent()?.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.push(rel.file_stem()?.to_str()?.to_string());
    Some(parts.join("."))
}

/// Installs `require` in `lua`, reading modules under `scripts_dir/lib`.
pub(crate) fn install(lua: &Lua, scripts_dir: PathBuf, required: Required) -> mlua::Result<Required> {
    let loaded: Table = lua.create_table()?;
    let loading: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let rec = required.clone();
    let require = lua.create_function(move |lua, name: String| {
        if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        let file = module_file(&scripts_dir, &name)
            .ok_or_else(|| mlua::Error::runtime(format!("require(\"{name}\"): a module name is 1 to 4 words of letters, digits and _, joined by dots")))?;
        {
            let mut chain = loading.lock().unwrap_or_else(|p| p.into_inner());
            if chain.contains(&name) {
                let mut cycle = chain.clone();
                cycle.push(name.clone());
                return Err(mlua::Error::runtime(format!("require: modules require each other in a loop: {}", cycle.join(" → "))));
            }
            chain.push(name.clone());
        }
        let result = (|| {
            let shown = format!("{LIB_DIR}/{}", file.strip_prefix(scripts_dir.join(LIB_DIR)).unwrap_or(&file).display());
            let cannot = |why: String| mlua::Error::runtime(format!("require(\"{name}\"): cannot read {shown}: {why}"));
            {
                let mut rec = rec.lock().unwrap_or_else(|p| p.into_inner());
                if !rec.contains(&name) && rec.len() >= MAX_MODULES {
                    return Err(mlua::Error::runtime(format!("require(\"{name}\"): a script may require at most {MAX_MODULES} modules")));
                }
                rec.insert(name.clone());
            }
            // Only a regular file inside lib/ (a symlink may not lead out of it), of bounded size.
            let lib = std::fs::canonicalize(scripts_dir.join(LIB_DIR)).map_err(|e| cannot(e.to_string()))?;
            let real = std::fs::canonicalize(&file).map_err(|e| cannot(e.to_string()))?;
            if !real.starts_with(&lib) {
                return Err(cannot(format!("it leads out of {LIB_DIR}/")));
            }
            let meta = std::fs::metadata(&real).map_err(|e| cannot(e.to_string()))?;
            if !meta.is_file() || meta.len() > MAX_MODULE_BYTES {
                return Err(cannot(format!("not a file of at most {MAX_MODULE_BYTES} bytes")));
            }
            // A hard link is a second name for a file that may live outside lib/ (a token
            // file, whose text a syntax error would then quote): only files with one name.
            if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
                return Err(cannot("it has other names (a hard link): a module is a file of lib/ alone; copy it instead".into()));
            }
            let source = std::fs::read(&real).map_err(|e| cannot(e.to_string()))?;
            if source.starts_with(b"\x1bLua") {
                return Err(mlua::Error::runtime(format!("require(\"{name}\"): {shown} is a binary chunk; modules are text")));
            }
            let f = lua.load(&source[..]).set_name(format!("@{shown}")).set_mode(ChunkMode::Text).into_function()?;
            super::tbc::refuse(&f).map_err(|e| mlua::Error::runtime(format!("require(\"{name}\"): {shown}: {e}")))?;
            let v: Value = f.call(name.as_str())?;
            Ok(if v.is_nil() { Value::Boolean(true) } else { v })
        })();
        loading.lock().unwrap_or_else(|p| p.into_inner()).retain(|n| n != &name);
        let v = result?;
        loaded.raw_set(name.as_str(), v.clone())?;
        Ok(v)
    })?;
    lua.globals().raw_set("require", require)?;
    Ok(required)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files() {
        let d = Path::new("/s");
        assert_eq!(module_file(d, "hours"), Some(PathBuf::from("/s/lib/hours.lua")));
        assert_eq!(module_file(d, "util.text"), Some(PathBuf::from("/s/lib/util/text.lua")));
        for bad in ["", "../x", "a..b", "a/b", "x.lua.", "a.b.c.d.e"] {
            assert_eq!(module_file(d, bad), None, "{bad}");
        }
        assert_eq!(module_name(d, Path::new("/s/lib/util/text.lua")).as_deref(), Some("util.text"));
        assert_eq!(module_name(d, Path::new("/s/call_log.lua")), None);
    }
}
