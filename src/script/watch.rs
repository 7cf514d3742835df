//! Hot reload: the scripts directory (not the files: editors save by writing a temporary file
//! and renaming it) is watched with `notify`; changes are debounced, then each changed script is
//! reloaded, loaded or unloaded.
//!
//! Symlinks: a script that is a symlink reloads when its target changes (the target's folder is
//! watched too, and events there are mapped back to the link); a scripts directory that is a
//! symlink is re-watched and rescanned when the link is pointed elsewhere (checked every second).

use super::host::{is_script_file, ScriptHost};
use super::loader::script_name;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many script loads a watcher's changes run at once (over every account it serves): each
/// load runs a top level on a thread of its own, for up to its time limit.
const RELOAD_CONCURRENCY: usize = 64;

/// How often a symlinked scripts directory is checked for a new target.
const RETARGET_CHECK: Duration = Duration::from_secs(1);

/// Keeps the watcher alive; dropping it stops hot reload.
pub struct WatchHandle {
    task: JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What is watched, so it can be set up again when symlinks change.
struct Watched {
    watcher: notify::RecommendedWatcher,
    dir: PathBuf,
    /// Where `dir` points (itself, unless it is a symlink).
    target: PathBuf,
    /// Folders watched for symlinked scripts' targets.
    extra: BTreeSet<PathBuf>,
    /// A symlinked script's target → the link in the scripts directory.
    links: BTreeMap<PathBuf, PathBuf>,
    /// Whether `<dir>/lib` is watched.
    lib_watched: bool,
}

impl Watched {
    /// (Re)watches the directory and the folders of symlinked scripts' targets.
    fn refresh(&mut self) {
        let target = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if target != self.target {
            let _ = self.watcher.unwatch(&self.dir);
            if let Err(error) = self.watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot watch the scripts directory");
            }
            self.target = target;
        }
        self.links.clear();
        let mut folders = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let link = entry.path();
            let is_link = std::fs::symlink_metadata(&link).map(|m| m.file_type().is_symlink()).unwrap_or(false);
            if !is_link || script_name(&link).is_none() {
                continue;
            }
            let Ok(target) = std::fs::read_link(&link).map(|t| if t.is_absolute() { t } else { self.dir.join(t) }) else {
                continue;
            };
            if let Some(folder) = target.parent() {
                folders.insert(folder.to_path_buf());
            }
            self.links.insert(target, link);
        }
        for gone in self.extra.difference(&folders) {
            let _ = self.watcher.unwatch(gone);
        }
        for new in folders.difference(&self.extra) {
            if new != &self.dir && new != &self.target {
                if let Err(error) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %new.display(), %error, "cannot watch a symlinked script's folder");
                }
            }
        }
        self.extra = folders;
    }

    /// Watches `<dir>/lib` (modules) when it exists; its changes reload the scripts using them.
    fn watch_lib(&mut self) {
        let lib = self.dir.join(super::modules::LIB_DIR);
        if lib.is_dir() && !self.lib_watched {
            match self.watcher.watch(&lib, RecursiveMode::Recursive) {
                Ok(()) => self.lib_watched = true,
                Err(error) => {
                    tracing::warn!(dir = %lib.display(), %error, "cannot watch the modules folder")
                }
            }
        }
    }

    /// The script a changed path stands for: itself, or the link whose target it is.
    fn script_for(&self, path: &Path) -> Option<PathBuf> {
        if let Some(link) = self.links.get(path) {
            return Some(link.clone());
        }
        let in_dir = path.parent().is_some_and(|p| p == self.dir || p == self.target);
        if !in_dir {
            return None;
        }
        Some(self.dir.join(path.file_name()?))
    }
}

/// The hosts a watched directory's changes go to (every account's, for the shared directory).
pub type Targets = std::sync::Arc<dyn Fn() -> Vec<ScriptHost> + Send + Sync>;

/// Starts watching the host's directory.
pub fn watch_dir(host: ScriptHost, debounce: Duration) -> notify::Result<WatchHandle> {
    let dir = host.dir().to_path_buf();
    watch(dir, std::sync::Arc::new(move || vec![host.clone()]), debounce)
}

/// Starts watching `dir`; each change goes to every host `targets` gives at that moment (one
/// watcher, one inotify instance, however many accounts share the directory).
pub fn watch(dir: PathBuf, targets: Targets, debounce: Duration) -> notify::Result<WatchHandle> {
    use tracing::Instrument;
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if !matches!(ev.kind, EventKind::Access(_)) => {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "script directory watcher error"),
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let target = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let mut w = Watched { watcher, dir, target, extra: BTreeSet::new(), links: BTreeMap::new(), lib_watched: false };
    w.refresh();
    w.watch_lib();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(RELOAD_CONCURRENCY));
    let task = tokio::spawn(
        async move {
            let mut check = tokio::time::interval(RETARGET_CHECK);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let first = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => return },
                    _ = check.tick() => {
                        let now = std::fs::canonicalize(&w.dir).unwrap_or_else(|_| w.dir.clone());
                        if now != w.target {
                            tracing::info!(dir = %w.dir.display(), points_to = %now.display(), "scripts directory now points elsewhere; rescanning");
                            w.refresh();
                            for host in targets() {
                                let span = host.env().span.clone();
                                tokio::spawn(async move { host.rescan().await }.instrument(span));
                            }
                        }
                        continue;
                    }
                };
                let mut changed = BTreeSet::from([first]);
                // Debounce: wait until the directory has been quiet for `debounce`.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(p)) => {
                            changed.insert(p);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let changed_scripts: BTreeSet<PathBuf> = changed.iter().filter_map(|p| w.script_for(p)).collect();
                let modules: Vec<String> = changed.iter().filter_map(|p| super::modules::module_name(&w.dir, p)).collect();
                // Each account's each script loads in a task of its own, not awaited here: a
                // script whose top level hangs (for its time limit, in one account or all)
                // holds up neither another file's reload nor the next change. The host loads
                // one script one version at a time.
                for host in targets() {
                    let span = host.env().span.clone();
                    let mut loads: Vec<(PathBuf, bool)> = changed_scripts.iter().map(|p| (p.clone(), false)).collect();
                    // A module saved: every script that required it loads again (keeping its
                    // running version if the new one fails).
                    for module in &modules {
                        let users = host.dependents(module);
                        if !users.is_empty() {
                            span.in_scope(|| tracing::info!(module = %module, scripts = users.len(), "module changed; reloading the scripts that use it"));
                        }
                        loads.extend(users.into_iter().map(|p| (p, true)));
                    }
                    // (A script both changed and using a changed module loads as a dependent.)
                    loads.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    loads.dedup_by(|a, b| a.0 == b.0);
                    for (path, dependency) in loads {
                        if script_name(&path).is_none() || path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.')) {
                            continue;
                        }
                        if is_script_file(&path) || !path.exists() {
                            let (host, permits) = (host.clone(), permits.clone());
                            tokio::spawn(
                                async move {
                                    let _permit = permits.acquire_owned().await;
                                    if dependency {
                                        host.dependency_changed(&path).await
                                    } else {
                                        host.changed(&path).await
                                    }
                                }
                                .instrument(span.clone()),
                            );
                        }
                    }
                }
                // Links may have been added, removed or pointed elsewhere; lib/ may have appeared.
                w.refresh();
                w.watch_lib();
            }
        }
        .instrument(tracing::Span::current()),
    );
    Ok(WatchHandle { task })
}
