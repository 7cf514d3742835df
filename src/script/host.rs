//! The set of loaded scripts. Each script has a task (`runner.rs`) with an inbox: dispatch puts
//! each event in every inbox, in channel order, and returns at once, so a slow script never
//! holds the event channel or another script.

use super::budget::Limits;
use super::env::{ScriptEnv, ScriptSettings};
use super::loader::{self, script_name, ScriptError};
use super::runner::{self, Msg};
use super::trace;
use super::watchdog::{self, Watch};
use crate::store::Store;
use crate::ucwa::Event;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub use super::output::ScriptOutput;

pub use crate::metrics::MAX_STUCK_VERSIONS;

/// How many scripts of one host load at once (each top level runs on a thread of its own, so a
/// top level stuck in C holds up only its own script).
const LOAD_CONCURRENCY: usize = 16;

struct Entry {
    inbox: mpsc::UnboundedSender<Msg>,
    version: u64,
    path: PathBuf,
    /// The modules the running version required.
    modules: super::modules::Required,
    watch: Arc<Watch>,
    /// Completes when the script's thread has ended.
    ended: tokio::sync::oneshot::Receiver<()>,
    /// What the running version's file held (`file_stamp`), to tell a changed file from a rescan.
    stamp: Option<u64>,
}

/// A script whose last load failed.
struct Failed {
    path: PathBuf,
    /// The modules it required before failing: fixing one of them loads the script again.
    required: super::modules::Required,
    /// When its top level was given up on (stuck): the file's stamp then. It is not loaded
    /// again (another thread stuck) until the file changes.
    stuck: Option<u64>,
    /// Why (its first line), for the traces of the events it misses.
    error: String,
}

/// The versions of the host's scripts stuck in a call, and the versions waiting for them.
#[derive(Default)]
struct StuckTable {
    /// Per script, the watches of its versions stuck in a call whose thread has not ended.
    threads: BTreeMap<String, Vec<Arc<Watch>>>,
    /// Per script, the file of a new version waiting for one of them to end.
    waiting: BTreeMap<String, PathBuf>,
}

impl StuckTable {
    /// The stuck versions of `name` whose thread is still there.
    fn count(&mut self, name: &str) -> usize {
        let Some(list) = self.threads.get_mut(name) else {
            return 0;
        };
        list.retain(|w| !w.has_ended());
        let n = list.len();
        if n == 0 {
            self.threads.remove(name);
        }
        n
    }
}

struct Inner {
    /// The scripts directory, then the account's own one (a script there replaces the shared
    /// one of the same name).
    dirs: Vec<PathBuf>,
    env: Arc<ScriptEnv>,
    scripts: Mutex<BTreeMap<String, Entry>>,
    /// Scripts whose last load failed.
    failed: Mutex<BTreeMap<String, Failed>>,
    stuck: Mutex<StuckTable>,
    /// Scripts being loaded now, and whether they are to be loaded once more after (a change
    /// came in meanwhile): one load of a script at a time, never one awaiting another's.
    loading: Mutex<BTreeMap<String, bool>>,
    /// Shut down: nothing loads any more (an account stopped while its files still change).
    closed: std::sync::atomic::AtomicBool,
    /// The watches of versions driven by their caller (`drive`), for the watchdog.
    driven: Mutex<Vec<Arc<Watch>>>,
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
        let inner = Arc::new(Inner {
            dirs,
            env: Arc::new(env),
            scripts: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            stuck: Default::default(),
            loading: Default::default(),
            closed: Default::default(),
            driven: Default::default(),
        });
        watchdog::spawn(Arc::downgrade(&inner));
        ScriptHost { inner }
    }

    pub fn env(&self) -> &Arc<ScriptEnv> {
        &self.inner.env
    }

    /// The scripts directories (the shared one, then the account's own).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.inner.dirs
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
            for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                if !is_script_file(&p) {
                    if let Some(why) = not_a_script_file(&p) {
                        tracing::warn!(file = %p.display(), "not loaded: {why}");
                    }
                    continue;
                }
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
    /// for its name (another directory's, when an account's own copy went), or unloads it. A
    /// file whose version is stuck (its top level, or a call) is left alone until it changes.
    pub async fn changed(&self, path: &Path) {
        self.changed_with(path, true).await
    }

    /// A module the script at `path` required changed: it loads again (even when stuck: the
    /// module may be what kept it stuck).
    pub async fn dependency_changed(&self, path: &Path) {
        self.changed_with(path, false).await
    }

    async fn changed_with(&self, path: &Path, skip_unchanged_stuck: bool) {
        let Some(name) = script_name(path) else {
            return;
        };
        if let Some(winner) = self.winner(&name) {
            let loaded = self.lock().get(&name).map(|e| e.path.clone());
            let current = loaded.or_else(|| self.failed().get(&name).map(|f| f.path.clone()));
            // A change to a file that another directory overrides changes nothing.
            if winner != path && current.as_ref() == Some(&winner) {
                return;
            }
        }
        self.reload(&name, skip_unchanged_stuck).await;
    }

    /// Loads the file that stands for `name` now, or unloads the script when there is none. While
    /// a load of the script runs, this only asks it to load once more after (with the file as it
    /// is then): one load of a script at a time, and no caller waits behind another script.
    async fn reload(&self, name: &str, skip_unchanged_stuck: bool) {
        {
            let mut loading = self.inner.loading.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(again) = loading.get_mut(name) {
                *again = true;
                return;
            }
            loading.insert(name.to_string(), false);
        }
        loop {
            match self.winner(name) {
                Some(path) if skip_unchanged_stuck && self.stuck_and_unchanged(name, &path) => {
                    tracing::debug!(script = name, file = %path.display(), "script not reloaded: its version is stuck and the file has not changed since");
                }
                Some(path) => {
                    let _ = self.load_file(&path).await;
                }
                None => self.unload(name),
            }
            let mut loading = self.inner.loading.lock().unwrap_or_else(|p| p.into_inner());
            match loading.get_mut(name) {
                Some(again) if *again => *again = false,
                _ => {
                    loading.remove(name);
                    return;
                }
            }
        }
    }

    /// Whether `name`'s version from `path` is stuck (a call that has not returned, or a top
    /// level given up on) and the file still holds what that version was built from.
    fn stuck_and_unchanged(&self, name: &str, path: &Path) -> bool {
        let Some(stamp) = file_stamp(path) else {
            return false;
        };
        if self.lock().get(name).is_some_and(|e| e.watch.is_stuck() && e.path == path && e.stamp == Some(stamp)) {
            return true;
        }
        self.failed().get(name).is_some_and(|f| f.path == path && f.stuck == Some(stamp))
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Failed>> {
        self.inner.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream of what scripts do from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ScriptOutput> {
        self.inner.env.subscribe_output()
    }

    /// `subscribe`, with every event and every run's trace on the stream while the guard lives
    /// (`/api/tap`).
    pub fn tap(&self) -> (broadcast::Receiver<ScriptOutput>, super::env::TapGuard) {
        self.inner.env.tap()
    }

    /// Whether the host was shut down (its account stopped).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Loaded scripts and their versions.
    pub fn scripts(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(n, e)| (n.clone(), e.version)).collect()
    }

    /// Every script, loaded or not, with its state and last errors (the console), by name.
    pub fn statuses(&self) -> Vec<super::board::ScriptStatus> {
        use super::board::ScriptStatus;
        let board = &self.inner.env.board;
        let failed: BTreeMap<String, String> = self.failed().iter().map(|(n, f)| (n.clone(), f.error.clone())).collect();
        let mut all: BTreeMap<String, ScriptStatus> = self
            .lock()
            .iter()
            .map(|(n, e)| {
                let b = board.get(n);
                let state = if e.watch.is_stuck() {
                    "stuck"
                } else if b.paused {
                    "paused"
                } else {
                    "loaded"
                };
                (n.clone(), ScriptStatus { name: n.clone(), version: Some(e.version), state, load_error: failed.get(n).cloned(), last_error: b.last_error })
            })
            .collect();
        for (n, error) in failed {
            all.entry(n.clone()).or_insert_with(|| ScriptStatus {
                name: n.clone(),
                version: None,
                state: "failed",
                load_error: Some(error),
                last_error: board.get(&n).last_error,
            });
        }
        all.into_values().collect()
    }

    /// Lets a paused script take events again (as saving its file does); false if no such
    /// script runs.
    pub fn resume(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|e| e.inbox.send(Msg::Resume).is_ok())
    }

    /// Loads every `*.lua` of the directory, several at once; returns the ones that failed
    /// (each already logged), in name order.
    pub async fn load_dir(&self) -> Result<Vec<ScriptError>, std::io::Error> {
        use futures_util::StreamExt;
        let paths = self.script_files()?;
        let results: Vec<Result<u64, ScriptError>> =
            futures_util::stream::iter(paths).map(|p| async move { self.load_file(&p).await }).buffered(LOAD_CONCURRENCY).collect().await;
        Ok(results.into_iter().filter_map(Result::err).collect())
    }

    /// Loads (or reloads) one file. On success the new version takes over between two events;
    /// on failure the old version, if any, keeps running and the error is logged once. While
    /// `MAX_STUCK_VERSIONS` of the script's versions are stuck (calls or top levels that have
    /// not returned), a new version is not built: it waits for one of them to return.
    pub async fn load_file(&self, path: &Path) -> Result<u64, ScriptError> {
        let name =
            script_name(path).ok_or_else(|| ScriptError { script: path.display().to_string(), path: path.to_path_buf(), message: "not a .lua file".into() })?;
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ScriptError { script: name, path: path.to_path_buf(), message: "the scripts' account is stopped".into() });
        }
        // Not even built (a Lua state, a loading thread whose top level may hang too) while
        // the script has as many versions stuck as are kept.
        if let Some(waits) = self.wait_for_stuck(&name, path) {
            return Err(waits);
        }
        let version = self.lock().get(&name).map_or(1, |e| e.version + 1);
        let stamp = file_stamp(path);
        let required = super::modules::Required::default();
        let load_watch = Watch::new(Arc::from(name.as_str()));
        let built = load_bounded(path, &name, version, &self.inner.env, required.clone(), self.on_thread_end(load_watch.clone())).await;
        let loaded = match built {
            Ok(l) => {
                self.failed().remove(&name);
                l
            }
            Err((mut e, stuck)) => {
                if stuck {
                    // Its thread stays until the top level returns: counted like a stuck call.
                    self.inner.add_stuck(&name, load_watch);
                    e.message.push_str(" (nor loaded again until the file changes)");
                }
                let error = e.message.lines().next().unwrap_or("").to_string();
                self.failed().insert(name.clone(), Failed { path: path.to_path_buf(), required, stuck: stamp.filter(|_| stuck), error });
                let keeps = self.lock().get(&name).map(|e| e.version);
                self.inner.env.load_failed(&name, path, keeps, &e.message);
                return Err(e);
            }
        };
        let subscriptions = loaded.subscriptions().map_or(0, |s| s.count());
        let modules = loaded.modules.clone();
        let mut scripts = self.lock();
        let swap = scripts.get(&name).is_some_and(|e| !e.inbox.is_closed() && !e.watch.is_stuck());
        if !swap {
            // (Again: a version may have got stuck while this one was built.)
            if let Some(waits) = self.wait_for_stuck(&name, path) {
                return Err(waits);
            }
        }
        // Announced before the version can run (on its own thread, it may log at once).
        tracing::info!(script = %name, version, subscriptions, file = %path.display(), "script loaded");
        self.inner.env.metrics.reload(&name, true);
        self.inner.env.emit(ScriptOutput::Loaded { script: name.clone(), version });
        match scripts.get_mut(&name) {
            Some(entry) if swap => {
                let _ = entry.inbox.send(Msg::Swap(Box::new(loaded)));
                entry.version = version;
                entry.path = path.to_path_buf();
                entry.modules = modules;
                entry.stamp = stamp;
            }
            previous => {
                if previous.is_some_and(|e| e.watch.is_stuck()) {
                    tracing::info!(script = %name, version, "script restarted on a new thread: its file changed (the stuck thread is left behind)");
                    self.inner.env.metrics.script_stuck(&name, false);
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let cursor = self.catch_up(&name, &tx);
                let watch = Watch::new(Arc::from(name.as_str()));
                let ended = match runner::spawn(loaded, rx, self.inner.env.clone(), cursor, watch.clone(), self.on_thread_end(watch.clone())) {
                    Ok(ended) => ended,
                    Err(error) => {
                        let message = format!("cannot start the script's task: {error}");
                        self.inner.env.load_failed(&name, path, None, &message);
                        return Err(ScriptError { script: name, path: path.to_path_buf(), message });
                    }
                };
                scripts.insert(name.clone(), Entry { inbox: tx, version, path: path.to_path_buf(), modules, watch, ended, stamp });
            }
        }
        drop(scripts);
        Ok(version)
    }

    /// Builds a version of `name` whose events and timers its caller feeds in, on the caller's
    /// thread (`ucwa-agent test`, `script::manual`): the state as the loader builds it (limits,
    /// `agent`, `require` from `dir`), run by the runner's calls, watched by this host's
    /// watchdog (a call stuck in C is declared stuck at its limit, reported as any other).
    pub(crate) fn drive(&self, name: &str, dir: PathBuf) -> Result<mlua::Lua, String> {
        let loaded = loader::build(name, 1, &self.inner.env, dir, Default::default())?;
        let watch = Watch::new(Arc::from(name));
        self.inner.driven.lock().unwrap_or_else(|p| p.into_inner()).push(watch.clone());
        Ok(runner::Driven::install(loaded, watch))
    }

    /// While `MAX_STUCK_VERSIONS` of `name`'s versions are stuck, notes `path` as the version
    /// to start once one of them returns, says so, and gives the error that says why.
    fn wait_for_stuck(&self, name: &str, path: &Path) -> Option<ScriptError> {
        let mut table = self.inner.stuck.lock().unwrap_or_else(|p| p.into_inner());
        let stuck = table.count(name);
        if stuck < MAX_STUCK_VERSIONS {
            if table.waiting.remove(name).is_some() {
                self.inner.env.metrics.script_waiting(name, false);
            }
            return None;
        }
        table.waiting.insert(name.to_string(), path.to_path_buf());
        drop(table);
        self.inner.env.metrics.script_waiting(name, true);
        tracing::warn!(
            script = name,
            file = %path.display(),
            stuck_versions = stuck,
            max_stuck_versions = MAX_STUCK_VERSIONS,
            "new version of the script not started yet: {stuck} of its versions are stuck in calls that have not returned (the most kept per script); it starts as soon as one of them returns"
        );
        Some(ScriptError {
            script: name.to_string(),
            path: path.to_path_buf(),
            message: format!(
                "not started yet: {stuck} versions of this script are stuck in calls that have not returned (at most {MAX_STUCK_VERSIONS} are kept per script); it starts as soon as one of them returns"
            ),
        })
    }

    /// What a script's thread (running or loading a version) does as it ends: a stuck
    /// version's thread gone makes room for a version waiting for it.
    fn on_thread_end(&self, watch: Arc<Watch>) -> impl FnOnce() + Send + 'static {
        let host = Arc::downgrade(&self.inner);
        move || match host.upgrade() {
            Some(inner) => inner.thread_ended(&watch),
            None => watch.set_ended(),
        }
    }

    /// The files of the scripts whose running version required `module`.
    pub fn dependents(&self, module: &str) -> Vec<PathBuf> {
        let uses = |r: &super::modules::Required| r.lock().unwrap_or_else(|p| p.into_inner()).contains(module);
        let mut paths: Vec<PathBuf> = self.lock().values().filter(|e| uses(&e.modules)).map(|e| e.path.clone()).collect();
        let failed = self.failed();
        paths.extend(failed.values().filter(|f| uses(&f.required)).map(|f| f.path.clone()));
        paths.sort();
        paths.dedup();
        paths
    }

    /// Loads every script file again (new settings, a new directory target), several at once,
    /// loads new ones and unloads those whose file is gone. A stuck version whose file has not
    /// changed is left alone (restarting it would only leave one more thread stuck).
    pub async fn rescan(&self) {
        use futures_util::StreamExt;
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
        futures_util::stream::iter(names).for_each_concurrent(LOAD_CONCURRENCY, |name| async move { self.reload(&name, true).await }).await;
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
        self.failed().remove(name);
        if self.inner.stuck.lock().unwrap_or_else(|p| p.into_inner()).waiting.remove(name).is_some() {
            self.inner.env.metrics.script_waiting(name, false);
        }
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
        let env = &self.inner.env;
        if env.listened() {
            for ev in &events {
                env.emit(ScriptOutput::Received { seq: ev.seq, rel: ev.rel().to_string(), kind: ev.kind().to_string(), href: ev.href().to_string() });
            }
        }
        let events = Arc::new(events);
        // A stuck script is not fed: its events stay in the journal after its cursor for the
        // version that replaces it.
        for entry in self.lock().values().filter(|e| !e.watch.is_stuck()) {
            let _ = entry.inbox.send(Msg::Events(events.clone()));
        }
        // A script that could not load, with no version running, misses them: said in its traces.
        let keep = env.settings().traces_per_script;
        if keep > 0 {
            let failed: Vec<(String, String)> = self.failed().iter().map(|(n, f)| (n.clone(), f.error.clone())).collect();
            let missed: Vec<(String, String)> = if failed.is_empty() {
                failed
            } else {
                let running = self.lock();
                failed.into_iter().filter(|(n, _)| !running.contains_key(n)).collect()
            };
            for (name, error) in missed {
                let traces = events.iter().map(|ev| {
                    let mut t = trace::Trace::new(&env.account.name, &name, 0, "event", env.clock.now_ms());
                    t.event = Some(trace::TracedEvent::of(ev));
                    t.skipped = Some(format!("not loaded: {error}"));
                    t
                });
                if let Err(error) = env.store.add_traces(&name, &trace::chunk(traces, keep, false).0) {
                    tracing::warn!(script = %name, %error, "cannot write the script's traces");
                }
            }
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
        let mut watches = BTreeMap::new();
        for (name, e) in entries {
            if e.watch.is_stuck() {
                unfinished.push(name);
                continue;
            }
            watches.insert(name.clone(), e.watch.clone());
            // (Before Stop: a commit from now on writes its traces itself, whether or not
            // the grace is enough for the script to end.)
            e.watch.stop_holding();
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
            for watch in busy.iter().filter_map(|name| watches.get(name)) {
                runner::write_held_traces(watch, &self.inner.env);
            }
            unfinished.extend(busy);
        }
        unfinished
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.scripts.lock().expect("script table lock")
    }
}

impl Inner {
    /// A version of `name` is stuck in a call (declared by the watchdog, or a top level given
    /// up on): counted until its thread ends.
    fn add_stuck(&self, name: &str, watch: Arc<Watch>) {
        let mut table = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        if !watch.has_ended() {
            table.threads.entry(name.to_string()).or_default().push(watch);
        }
        let n = table.count(name);
        self.env.metrics.stuck_versions(name, n);
    }

    /// A script's thread ended. When it was a stuck version's (its call returned at last), a
    /// version waiting for room starts.
    fn thread_ended(self: &Arc<Self>, watch: &Arc<Watch>) {
        let mut table = self.stuck.lock().unwrap_or_else(|p| p.into_inner());
        watch.set_ended();
        let name = &*watch.name;
        if !table.threads.get(name).is_some_and(|list| list.iter().any(|w| Arc::ptr_eq(w, watch))) {
            return;
        }
        let n = table.count(name);
        let waiting = (n < MAX_STUCK_VERSIONS).then(|| table.waiting.remove(name)).flatten();
        drop(table);
        self.env.metrics.stuck_versions(name, n);
        let span = self.env.span.clone();
        span.in_scope(|| tracing::info!(script = name, stuck_versions = n, "a stuck version of the script returned from its call; its thread has ended"));
        if let Some(path) = waiting {
            self.env.metrics.script_waiting(name, false);
            let Some(io) = self.env.io.clone() else {
                span.in_scope(|| tracing::error!(script = name, file = %path.display(), "cannot start the waiting version: no runtime"));
                return;
            };
            let host = ScriptHost { inner: self.clone() };
            let name = name.to_string();
            use tracing::Instrument;
            io.spawn(
                async move {
                    tracing::info!(script = %name, file = %path.display(), "starting the version that waited for a stuck one to return");
                    host.reload(&name, false).await;
                }
                .instrument(span),
            );
        }
    }
}

impl watchdog::Overseer for Inner {
    fn watches(&self) -> Vec<Arc<Watch>> {
        let mut all: Vec<Arc<Watch>> = self.scripts.lock().unwrap_or_else(|p| p.into_inner()).values().map(|e| e.watch.clone()).collect();
        all.extend(self.driven.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        all
    }

    fn stuck(self: &Arc<Self>, watch: &Arc<Watch>, doing: String, limit: Duration, took: Duration) {
        // First: the Lua worker inside that call is given up and replaced, so the pool keeps its size.
        super::pool::abandon(watch);
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
        self.add_stuck(script, watch.clone());
        // The traces its last commits held back (their events are past its cursor), then the
        // stuck call's.
        runner::write_held_traces(watch, &self.env);
        let keep = self.env.settings().traces_per_script;
        if keep > 0 {
            let mut t = trace::Trace::new(&self.env.account.name, script, watch.running(), "stuck", self.env.clock.now_ms() - took.as_millis() as i64);
            t.skipped =
                Some(format!("stuck: the call ran past its {limit_ms} ms limit and does not return; the script gets no more events until its file changes"));
            t.calls.push(trace::Call {
                what: doing.clone().into(),
                sub: None,
                start_ms: t.at_ms,
                us: took.as_micros() as u64,
                outcome: "stuck".into(),
                error: None,
                at: None,
                steps: Vec::new(),
                started: None,
            });
            if let Err(error) = self.env.store.add_traces(script, &trace::chunk([t], keep, false).0) {
                tracing::warn!(script, %error, "cannot write the script's traces");
            }
        }
        self.env.emit(ScriptOutput::Stuck { script: script.to_string(), doing, limit_ms });
        // A version saved while the call hung waits in the stuck thread's inbox, which nobody
        // reads any more: load the file again, on a new thread.
        let pending = self.scripts.lock().unwrap_or_else(|p| p.into_inner()).get(script).is_some_and(|e| e.version > watch.running());
        if let (true, Some(io)) = (pending, self.env.io.clone()) {
            let host = ScriptHost { inner: self.clone() };
            let name = script.to_string();
            io.spawn(async move {
                host.reload(&name, false).await;
            });
        }
    }
}

/// Builds a version (`loader::load_bounded_then`) without holding a runtime worker while it
/// runs; the error says whether the top level was given up on (stuck).
async fn load_bounded(
    path: &Path,
    name: &str,
    version: u64,
    env: &Arc<ScriptEnv>,
    required: super::modules::Required,
    ended: impl FnOnce() + Send + 'static,
) -> Result<loader::Loaded, (ScriptError, bool)> {
    let (p, e) = (path.to_path_buf(), env.clone());
    tokio::task::spawn_blocking(move || loader::load_bounded_then(&p, version, &e, required, ended))
        .await
        .unwrap_or_else(|e| Err((ScriptError { script: name.to_string(), path: path.to_path_buf(), message: format!("loader crashed: {e}") }, false)))
}

/// What a script file holds now, as a hash (a rescan tells a changed file from an unchanged one).
fn file_stamp(path: &Path) -> Option<u64> {
    use std::hash::Hasher;
    let text = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(&text);
    Some(h.finish())
}

/// `*.lua`, not hidden, not an editor's backup or lock file, not a test (`*_test.lua`).
fn is_script_name(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.ends_with('~') && !name.ends_with("_test.lua") && script_name(p).is_some()
}

/// A script's name, and a regular file (through symlinks).
pub(crate) fn is_script_file(p: &Path) -> bool {
    is_script_name(p) && p.is_file()
}

/// Why an entry named as a script is not one `run` can load (a symlink to nothing, a directory,
/// a FIFO): it is skipped, and said to be, so that a script missing from a deploy is noticed.
pub(crate) fn not_a_script_file(p: &Path) -> Option<String> {
    if !is_script_name(p) {
        return None;
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("a directory, not a script file".into()),
        Ok(_) => Some("not a regular file (a FIFO, socket or device)".into()),
        // Gone between the listing and this look: nothing to say.
        Err(_) if p.symlink_metadata().is_err() => None,
        Err(e) => Some(format!("a symlink whose target cannot be read ({e})")),
    }
}
