//! Building one version of a script: a fresh sandboxed state, the `agent` table, the file run
//! as a text chunk named after the file (so errors read `call_log.lua:12: …`).

use super::api;
use super::budget;
use super::ctx::{ScriptCtx, Subscriptions};
use super::env::ScriptEnv;
use super::sandbox;
use super::watchdog;
use mlua::{chunk::ChunkMode, Lua};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A script that could not be loaded, or a handler that failed: file, line and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ScriptError {
    pub script: String,
    pub path: PathBuf,
    pub message: String,
}

/// One loaded version of a script.
pub(crate) struct Loaded {
    pub lua: Lua,
    pub ctx: ScriptCtx,
    /// The modules (`require`) this version uses.
    pub modules: super::modules::Required,
}

impl Loaded {
    pub(crate) fn subscriptions(&self) -> Option<mlua::AppDataRef<'_, Subscriptions>> {
        self.lua.app_data_ref::<Subscriptions>()
    }
}

/// The script name of a file: its stem (`scripts/call_log.lua` → `call_log`).
pub(crate) fn script_name(path: &Path) -> Option<String> {
    if path.extension().and_then(|e| e.to_str()) != Some("lua") {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (!stem.is_empty()).then(|| stem.to_string())
}

/// `load` on a thread of its own: a top level that never returns (C code the limits cannot
/// interrupt) is given up after the time limit plus the watchdog's grace and reported as a
/// load failure; its thread is left behind.
/// `required` collects the modules the version requires, kept by the caller even when the load
/// fails (so that fixing a module it needed loads it again).
pub(crate) fn load_bounded(path: &Path, version: u64, env: &Arc<ScriptEnv>, required: super::modules::Required) -> Result<Loaded, ScriptError> {
    load_bounded_then(path, version, env, required, || {}).map_err(|(e, _)| e)
}

/// `load_bounded`; `ended` runs on the loading thread once the top level has returned (late,
/// for one that was given up on). The error says whether the top level was given up on (true:
/// its thread is left behind, stuck).
pub(crate) fn load_bounded_then(
    path: &Path,
    version: u64,
    env: &Arc<ScriptEnv>,
    required: super::modules::Required,
    ended: impl FnOnce() + Send + 'static,
) -> Result<Loaded, (ScriptError, bool)> {
    let name = script_name(path).unwrap_or_else(|| path.display().to_string());
    let limit = env.settings().limits.handler_timeout;
    let (p, e) = (path.to_path_buf(), env.clone());
    match watchdog::run_bounded_then(format!("lua-load:{name}"), limit, move || e.span.in_scope(|| load(&p, version, &e, required)), ended) {
        Ok(loaded) => loaded.map_err(|e| (e, false)),
        Err(waited) if waited.is_zero() => {
            Err((ScriptError { script: name, path: path.to_path_buf(), message: "cannot start a thread to run the top level".into() }, false))
        }
        Err(waited) => Err((
            ScriptError {
                script: name,
                path: path.to_path_buf(),
                message: format!(
                    "the top level did not return within {} ms (scripts.handler_timeout_ms plus {} ms): stuck in code the limits cannot interrupt; not loaded",
                    waited.as_millis(),
                    watchdog::GRACE.as_millis()
                ),
            },
            true,
        )),
    }
}

/// Reads, compiles and runs a script's top level.
pub(crate) fn load(path: &Path, version: u64, env: &Arc<ScriptEnv>, required: super::modules::Required) -> Result<Loaded, ScriptError> {
    let settings = env.settings();
    let limits = &settings.limits;
    let name = script_name(path).unwrap_or_else(|| path.display().to_string());
    let fail = |message: String| ScriptError { script: name.clone(), path: path.to_path_buf(), message };
    let source = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if source.starts_with(b"\x1bLua") {
        return Err(fail("binary (precompiled) chunks are not allowed; save the script as text".into()));
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let Loaded { lua, ctx, modules } = build(&name, version, env, dir, required).map_err(&fail)?;
    let chunk_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| name.clone());
    if let Some(b) = budget::budget(&lua) {
        b.arm(limits);
    }
    lua.load(&source[..])
        .set_name(format!("@{chunk_name}"))
        .set_mode(ChunkMode::Text)
        .into_function()
        .and_then(|f| super::tbc::refuse(&f).and_then(|()| f.call::<()>(())))
        .map_err(|e| fail(ctx.redactor.redact(&describe(&e)).into_owned()))?;
    // What building the state and compiling the file left behind (about 15 KiB) would stay
    // until the next collection, which an idle script may not reach for hours: one full
    // collection now keeps an idle account's state at what it holds (BENCHMARKS.md).
    lua.gc_collect().map_err(|e| fail(describe(&e)))?;
    Ok(Loaded { lua, ctx, modules })
}

/// A version's state before its file runs: the sandbox with the limits, the `agent` table, and
/// `require` from `dir`'s `lib/`. (`ucwa-agent test` builds its test file's state here too.)
pub(crate) fn build(name: &str, version: u64, env: &Arc<ScriptEnv>, dir: PathBuf, required: super::modules::Required) -> Result<Loaded, String> {
    let lua = sandbox::new_state(&env.settings().limits).map_err(|e| format!("cannot create a Lua state: {e}"))?;
    let ctx = ScriptCtx::new(name, version, env)?;
    api::register(&lua, &ctx).map_err(|e| format!("cannot install the agent API: {e}"))?;
    let modules = super::modules::install(&lua, dir, required).map_err(|e| format!("cannot install require: {e}"))?;
    Ok(Loaded { lua, ctx, modules })
}

/// An mlua error as a user reads it: `file.lua:LINE: message`, then the traceback if any.
pub(crate) fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::SyntaxError { message, .. } => format!("syntax error: {message}"),
        mlua::Error::MemoryError(_) => "memory limit exceeded (scripts.memory_limit_mb)".into(),
        mlua::Error::CallbackError { traceback, cause } => {
            let cause = describe(cause);
            format!("{cause}\n{traceback}")
        }
        mlua::Error::RuntimeError(m) if m == "not enough memory" => "memory limit exceeded (scripts.memory_limit_mb)".into(),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", describe(cause)),
        other => other.to_string(),
    }
}
