//! Hot reload: the scripts directory (not the files: editors save by writing a temporary file
//! and renaming it) is watched with `notify`; changes are debounced, then each changed script is
//! reloaded, loaded or unloaded.

use super::host::{is_script_file, ScriptHost};
use super::loader::script_name;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Keeps the watcher alive; dropping it stops hot reload.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the host's directory.
pub fn watch_dir(host: ScriptHost, debounce: Duration) -> notify::Result<WatchHandle> {
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
    watcher.watch(host.dir(), RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
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
            for path in changed {
                let Some(name) = script_name(&path) else { continue };
                let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
                if hidden {
                    continue;
                }
                if is_script_file(&path) {
                    let _ = host.load_file(&path).await;
                } else if !path.exists() {
                    host.unload(&name);
                }
            }
        }
    });
    Ok(WatchHandle { _watcher: watcher, task })
}
