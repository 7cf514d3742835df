//! The set of loaded scripts. Each script has a task (`runner.rs`) with an inbox: dispatch puts
//! each event in every inbox, in channel order, and returns at once, so a slow script never
//! holds the event channel or another script.

use super::env::{ScriptEnv, ScriptSettings};
use super::loader::{self, script_name, ScriptError};
use super::runner::{self, Msg};
use super::sandbox::Limits;
use super::watchdog::{self, Watch};
use crate::store::Store;
use crate::ucwa::Event;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub use super::output::ScriptOutput;

struct Entry {
    inbox: mpsc::UnboundedSender<Msg>,
    version: u64,
    path: PathBuf,
    /// The modules the running version required.
    modules: super::modules::Required,
    watch: Arc<Watch>,
    /// Completes when the script's thread has ended.
    ended: tokio::sync::oneshot::Receiver<()>,
}

struct Inner {
    /// The scripts directory, then the account's own one (a script there replaces the shared
    /// one of the same name).
    dirs: Vec<PathBuf>,
    env: Arc<ScriptEnv>,
    scripts: Mutex<BTreeMap<String, Entry>>,
    /// Scripts whose last load failed, with the modules it required before failing: fixing one
    /// of those modules loads the script again.
    failed: Mutex<BTreeMap<String, (PathBuf, super::modules::Required)>>,
    /// Shut down: nothing loads any more (an account stopped while its files still change).
    closed: std::sync::atomic::AtomicBool,
}

/// Cheap to clone; all clones are the same host.
#[derive(Clone)]
pub struct ScriptHost {
    inner: Arc<Inner>,
}

impl ScriptHost {
    /// A host with an in-memory database and no UCWA session (tests, offline tools).
    pub fn new(dir: PathBuf, limits: Limits) -> ScriptHost {
        ScriptHost::with_env(dir, ScriptEnv::new(ScriptSettings::new(limits), Arc::new(Store::in_memory())))
    }

    pub fn with_env(dir: PathBuf, env: ScriptEnv) -> ScriptHost {
        ScriptHost::with_dirs(vec![dir], env)
    }

    /// A host whose scripts are those of every dir in `dirs` (the last one holding a name wins).
    pub fn with_dirs(dirs: Vec<PathBuf>, env: ScriptEnv) -> ScriptHost {
        assert!(!dirs.is_empty(), "a script host has a directory");
        let inner =
            Arc::new(Inner { dirs, env: Arc::new(env), scripts: Mutex::new(BTreeMap::new()), failed: Mutex::new(BTreeMap::new()), closed: Default::default() });
        watchdog::spawn(Arc::downgrade(&inner));
        ScriptHost { inner }
    }

    pub fn env(&self) -> &Arc<ScriptEnv> {
        &self.inner.env
    }

    /// The (shared) scripts directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dirs[0]
    }

    /// The script files, one per name: the last directory holding a name wins. Any directory
    /// that cannot be read is an error (a rescan then changes nothing: an account's overrides
    /// are not replaced by the shared scripts because their folder was briefly unreadable).
    fn script_files(&self) -> Result<Vec<PathBuf>, std::io::Error> {
        let mut by_name = BTreeMap::new();
        for (i, dir) in self.inner.dirs.iter().enumerate() {
            // (The first is the one the caller names; a later one is named here.)
            let entries = std::fs::read_dir(dir).map_err(|e| if i == 0 { e } else { std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())) })?;
            for p in entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_script_file(p)) {
                if let Some(name) = script_name(&p) {
                    by_name.insert(name, p);
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    /// The file that stands for script `name` now (the last directory holding it), if any.
    fn winner(&self, name: &str) -> Option<PathBuf> {
        self.inner.dirs.iter().rev().map(|d| d.join(format!("{name}.lua"))).find(|p| is_script_file(p))
    }

    /// A script file changed, appeared or went (the watcher): loads the file that now stands
    /// for its name (another directory's, when an account's own copy went), or unloads it.
    pub async fn changed(&self, path: &Path) {
        let Some(name) = script_name(path) else { return };
        match self.winner(&name) {
            Some(winner) => {
                let loaded = self.lock().get(&name).map(|e| e.path.clone());
                let current = loaded.or_else(|| self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()).get(&name).map(|(p, _)| p.clone()));
                // A change to a file that another directory overrides changes nothing.
                if winner == path || current.as_ref() != Some(&winner) {
                    let _ = self.load_file(&winner).await;
                }
            }
            None => self.unload(&name),
        }
    }

    /// A stream of what scripts do from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ScriptOutput> {
        self.inner.env.subscribe_output()
    }

    /// Loaded scripts and their versions.
    pub fn scripts(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(n, e)| (n.clone(), e.version)).collect()
    }

    /// Loads every `*.lua` of the directory; returns the ones that failed (each already logged).
    pub async fn load_dir(&self) -> Result<Vec<ScriptError>, std::io::Error> {
        let paths = self.script_files()?;
        let mut failed = Vec::new();
        for p in paths {
            if let Err(e) = self.load_file(&p).await {
                failed.push(e);
            }
        }
        Ok(failed)
    }

    /// Loads (or reloads) one file. On success the new version takes over between two events;
    /// on failure the old version, if any, keeps running and the error is logged once.
    pub async fn load_file(&self, path: &Path) -> Result<u64, ScriptError> {
        let name =
            script_name(path).ok_or_else(|| ScriptError { script: path.display().to_string(), path: path.to_path_buf(), message: "not a .lua file".into() })?;
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ScriptError { script: name, path: path.to_path_buf(), message: "the scripts' account is stopped".into() });
        }
        let version = self.lock().get(&name).map_or(1, |e| e.version + 1);
        let required = super::modules::Required::default();
        let built = load_bounded(path, &name, version, &self.inner.env, required.clone()).await;
        let loaded = match built {
            Ok(l) => {
                self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                l
            }
            Err(e) => {
                self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), (path.to_path_buf(), required));
                let (first, rest) = e.message.split_once('\n').unwrap_or((&e.message, ""));
                let keeps = self.lock().get(&name).map(|e| e.version);
                tracing::error!(script = %name, file = %path.display(), running_version = keeps, detail = rest, "script not loaded: {first}");
                self.inner.env.metrics.reload(&name, false);
                self.inner.env.emit(ScriptOutput::LoadFailed { script: name, error: e.message.clone() });
                return Err(e);
            }
        };
        let subscriptions = loaded.subscriptions().map_or(0, |s| s.count());
        // Announced before the version can run (on its own thread, it may log at once).
        tracing::info!(script = %name, version, subscriptions, file = %path.display(), "script loaded");
        self.inner.env.metrics.reload(&name, true);
        self.inner.env.emit(ScriptOutput::Loaded { script: name.clone(), version });
        let modules = loaded.modules.clone();
        let mut scripts = self.lock();
        match scripts.get_mut(&name) {
            Some(entry) if !entry.inbox.is_closed() && !entry.watch.is_stuck() => {
                let _ = entry.inbox.send(Msg::Swap(Box::new(loaded)));
                entry.version = version;
                entry.path = path.to_path_buf();
                entry.modules = modules;
            }
            previous => {
                if previous.is_some_and(|e| e.watch.is_stuck()) {
                    tracing::info!(script = %name, version, "script restarted on a new thread: its file changed (the stuck thread is left behind)");
                    self.inner.env.metrics.script_stuck(&name, false);
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let cursor = self.catch_up(&name, &tx);
                let watch = Watch::new(Arc::from(name.as_str()));
                let ended = match runner::spawn(loaded, rx, self.inner.env.clone(), cursor, watch.clone()) {
                    Ok(ended) => ended,
                    Err(error) => {
                        let message = format!("cannot start the script's thread: {error}");
                        tracing::error!(script = %name, %error, "script not loaded: cannot start its thread");
                        self.inner.env.emit(ScriptOutput::LoadFailed { script: name.clone(), error: message.clone() });
                        return Err(ScriptError { script: name, path: path.to_path_buf(), message });
                    }
                };
                scripts.insert(name.clone(), Entry { inbox: tx, version, path: path.to_path_buf(), modules, watch, ended });
            }
        }
        drop(scripts);
        Ok(version)
    }

    /// The files of the scripts whose running version required `module`.
    pub fn dependents(&self, module: &str) -> Vec<PathBuf> {
        let uses = |r: &super::modules::Required| r.lock().unwrap_or_else(|p| p.into_inner()).contains(module);
        let mut paths: Vec<PathBuf> = self.lock().values().filter(|e| uses(&e.modules)).map(|e| e.path.clone()).collect();
        let failed = self.inner.failed.lock().unwrap_or_else(|p| p.into_inner());
        paths.extend(failed.values().filter(|(_, r)| uses(r)).map(|(p, _)| p.clone()));
        paths.sort();
        paths.dedup();
        paths
    }

    /// Loads every script file again (new settings, a new directory target), loads new ones
    /// and unloads those whose file is gone.
    pub async fn rescan(&self) {
        let present = match self.script_files() {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(dir = %self.dir().display(), %error, "cannot read the scripts directory");
                return;
            }
        };
        let names: Vec<String> = present.iter().filter_map(|p| script_name(p)).collect();
        for (name, _) in self.scripts() {
            if !names.contains(&name) {
                self.unload(&name);
            }
        }
        for p in present {
            let _ = self.load_file(&p).await;
        }
    }

    /// Where a newly started script begins: after its saved cursor, with the journal's events
    /// since then queued first (a restart resumes where it stopped); a script never seen before
    /// starts at the journal's head (it does not get old history).
    fn catch_up(&self, name: &str, inbox: &mpsc::UnboundedSender<Msg>) -> u64 {
        let store = &self.inner.env.store;
        match store.cursor(name) {
            Ok(Some(cursor)) => {
                match store.events_after(cursor) {
                    Ok(backlog) => {
                        if !backlog.is_empty() {
                            tracing::info!(script = name, from = cursor + 1, events = backlog.len(), "script resumes with events it had not finished");
                            let _ = inbox.send(Msg::Events(Arc::new(backlog)));
                        }
                    }
                    Err(error) => tracing::error!(script = name, %error, "cannot read the journal"),
                }
                cursor
            }
            Ok(None) => {
                let head = store.head().unwrap_or(0);
                if let Err(error) = store.commit_script(name, Some(head), None) {
                    tracing::error!(script = name, %error, "cannot save the script's cursor");
                }
                head
            }
            Err(error) => {
                tracing::error!(script = name, %error, "cannot read the script's cursor");
                store.head().unwrap_or(0)
            }
        }
    }

    /// Stops a script (its file is gone): events already queued for it still run first.
    pub fn unload(&self, name: &str) {
        self.inner.failed.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        if let Some(entry) = self.lock().remove(name) {
            if entry.watch.is_stuck() {
                self.inner.env.metrics.script_stuck(name, false);
            }
            let _ = entry.inbox.send(Msg::Stop);
            tracing::info!(script = name, "script unloaded");
            self.inner.env.emit(ScriptOutput::Unloaded { script: name.to_string() });
        }
    }

    /// Queues events (in channel order) for every script; returns at once.
    pub fn dispatch(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let events = Arc::new(events);
        // A stuck script is not fed: its events stay in the journal after its cursor for the
        // version that replaces it.
        for entry in self.lock().values().filter(|e| !e.watch.is_stuck()) {
            let _ = entry.inbox.send(Msg::Events(events.clone()));
        }
    }

    /// Waits until every script has finished what was queued before this call.
    pub async fn barrier(&self) {
        let waits: Vec<_> = self
            .lock()
            .values()
            .filter(|e| !e.watch.is_stuck())
            .map(|e| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = e.inbox.send(Msg::Barrier(tx));
                (rx, e.watch.clone())
            })
            .collect();
        // A script that gets stuck meanwhile never answers: stop waiting for it.
        for (mut rx, watch) in waits {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => if watch.is_stuck() { break },
                }
            }
        }
    }

    /// Lets every script finish what is queued (up to `grace`), then leaves: a script still
    /// busy is named and its thread left behind (the process exits without it). Stuck scripts
    /// are not waited for at all. Returns the scripts that did not finish (stuck or busy).
    pub async fn shutdown(&self, grace: Duration) -> Vec<String> {
        self.inner.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let entries: Vec<(String, Entry)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        let pending = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let mut waits = Vec::new();
        let mut unfinished = Vec::new();
        for (name, e) in entries {
            if e.watch.is_stuck() {
                unfinished.push(name);
                continue;
            }
            let _ = e.inbox.send(Msg::Stop);
            pending.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
            let pending = pending.clone();
            waits.push(async move {
                let _ = e.ended.await;
                pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            });
        }
        if tokio::time::timeout(grace, futures_util::future::join_all(waits)).await.is_err() {
            let busy: Vec<String> = pending.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
            tracing::warn!(grace_ms = grace.as_millis() as u64, scripts = ?busy, "scripts still busy at shutdown; not waiting for them");
            unfinished.extend(busy);
        }
        unfinished
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.scripts.lock().expect("script table lock")
    }
}

impl watchdog::Overseer for Inner {
    fn watches(&self) -> Vec<Arc<Watch>> {
        self.scripts.lock().unwrap_or_else(|p| p.into_inner()).values().map(|e| e.watch.clone()).collect()
    }

    fn stuck(self: &Arc<Self>, watch: &Watch, doing: String, limit: Duration, took: Duration) {
        let script = &*watch.name;
        let limit_ms = limit.as_millis() as u64;
        let _account = self.env.span.enter();
        tracing::error!(
            script,
            doing = %doing,
            limit_ms,
            running_ms = took.as_millis() as u64,
            "script stuck: a call ran past its time limit and does not return (C code or a finalizer the limits cannot interrupt); it gets no more events until its file changes"
        );
        self.env.metrics.script_stuck(script, true);
        self.env.emit(ScriptOutput::Stuck { script: script.to_string(), doing, limit_ms });
        // A version saved while the call hung waits in the stuck thread's inbox, which nobody
        // reads any more: load the file again, on a new thread.
        let pending = self.scripts.lock().unwrap_or_else(|p| p.into_inner()).get(script).filter(|e| e.version > watch.running()).map(|e| e.path.clone());
        if let (Some(path), Some(io)) = (pending, self.env.io.clone()) {
            let host = ScriptHost { inner: self.clone() };
            io.spawn(async move {
                let _ = host.load_file(&path).await;
            });
        }
    }
}

/// Builds a version (`loader::load_bounded`) without holding a runtime worker while it runs.
async fn load_bounded(path: &Path, name: &str, version: u64, env: &Arc<ScriptEnv>, required: super::modules::Required) -> Result<loader::Loaded, ScriptError> {
    let (p, e) = (path.to_path_buf(), env.clone());
    tokio::task::spawn_blocking(move || loader::load_bounded(&p, version, &e, required))
        .await
        .unwrap_or_else(|e| Err(ScriptError { script: name.to_string(), path: path.to_path_buf(), message: format!("loader crashed: {e}") }))
}

/// `*.lua`, not hidden, not an editor's backup or lock file, not a test (`*_test.lua`).
pub(crate) fn is_script_file(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && !name.ends_with('~') && !name.ends_with("_test.lua") && script_name(p).is_some() && p.is_file()
}
