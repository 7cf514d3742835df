//! The nouns every part of the `agent` API shares: who the script is and what it can reach
//! (`ScriptCtx`), its subscriptions, the event its handlers run for, its `on_unload`.

use super::env::ScriptEnv;
use crate::ucwa::Event;
use mlua::Function;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
        self.takes_rel(rel) && self.kind.as_deref().is_none_or(|k| k == kind)
    }

    /// Whether it looks at events of `rel` (whatever their type: a trace is made for those).
    pub(crate) fn takes_rel(&self, rel: &str) -> bool {
        self.rel == "*" || self.rel == rel
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
    /// While a run of events goes through the script in one entry into Lua (`script::dispatch`),
    /// the event its running handler is for is noted here instead, without a Rust callback.
    pub run: Arc<RunNow>,
}

impl CurrentEvent {
    /// The running handler's event: `rel`, `type`, `seq`.
    pub(crate) fn event(&self) -> Option<(String, String, u64)> {
        if self.active {
            return Some((self.rel.clone(), self.kind.clone(), self.seq));
        }
        self.run.event()
    }
}

/// What a run of events dispatched in one entry into Lua shares with the `agent.*` functions.
#[derive(Default)]
pub(crate) struct RunNow {
    /// The batch being dispatched.
    batch: Mutex<Option<Arc<Vec<Event>>>>,
    /// 1 + the index in it of the event whose handler runs (0: none).
    at: AtomicUsize,
    /// Bumped when a handler subscribes, unsubscribes or sets a timer: the run stops at the next
    /// event, so the runner takes the new subscriptions and the timer's turn into account.
    changes: AtomicU64,
}

impl RunNow {
    /// A run of `batch` starts (`None`: it ended).
    pub(crate) fn set_batch(&self, batch: Option<Arc<Vec<Event>>>) {
        self.at.store(0, Ordering::Relaxed);
        *self.batch.lock().unwrap_or_else(|p| p.into_inner()) = batch;
    }

    /// A handler starts for the batch's event `i`.
    pub(crate) fn set_at(&self, i: usize) {
        self.at.store(i + 1, Ordering::Relaxed);
    }

    fn event(&self) -> Option<(String, String, u64)> {
        let i = self.at.load(Ordering::Relaxed).checked_sub(1)?;
        let batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let ev = batch.as_ref()?.get(i)?;
        Some((ev.rel().to_string(), ev.kind().to_string(), ev.seq))
    }

    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }
}

/// The script changed what the runner must look at between two events (a subscription, a timer).
pub(crate) fn note_change(lua: &mlua::Lua) {
    if let Some(c) = lua.app_data_ref::<CurrentEvent>() {
        c.run.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The function `agent.on_unload` registered, if any (kept in the state's app data).
#[derive(Default)]
pub(crate) struct OnUnload(pub Mutex<Option<Function>>);
