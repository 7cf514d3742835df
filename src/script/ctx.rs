//! The nouns every part of the `agent` API shares: who the script is and what it can reach
//! (`ScriptCtx`), its subscriptions, the event its handlers run for, its `on_unload`.

use super::env::ScriptEnv;
use mlua::Function;
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

    pub(crate) fn add(&self, rel: String, kind: Option<String>, func: Function, line: Option<usize>) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let mut list = self.list.lock().expect("subscriptions lock");
        Arc::make_mut(&mut list).push(Sub { id, rel, kind, func, line });
        id
    }

    pub(crate) fn remove(&self, id: u64) -> bool {
        let mut list = self.list.lock().expect("subscriptions lock");
        let before = list.len();
        Arc::make_mut(&mut list).retain(|s| s.id != id);
        list.len() != before
    }
}

/// How an area of the `agent` table (`api::AREAS`) installs itself in it.
pub(crate) type Register = fn(&mlua::Lua, &mlua::Table, &ScriptCtx) -> mlua::Result<()>;

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
