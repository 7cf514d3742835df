//! The accounts that run (`Fleet`): launched as tasks, listed for the endpoints, the reloader
//! and systemd, stopped one by one or all at once.

use super::account::Account;
use super::end::RunEnd;
use super::{record, status};
use crate::config::AccountSpec;
use crate::metrics::HealthState;
use crate::script::ScriptHost;
use std::collections::BTreeMap;
use tokio::sync::watch;

/// The accounts that run, by label, shared with the reloader and the endpoints.
pub struct Fleet {
    /// Every account's scripts (also those whose run ended: `/healthz` shows why).
    pub(crate) hosts: std::sync::Mutex<BTreeMap<String, ScriptHost>>,
    /// The accounts are `[[account]]`s (labels shown in `/metrics` and `/healthz`).
    named: std::sync::atomic::AtomicBool,
    /// Set when the agent stops: no account starts after.
    stopping: std::sync::atomic::AtomicBool,
    /// Set once every account of the start has opened (until then `/healthz` says `starting`).
    pub(crate) started: std::sync::atomic::AtomicBool,
    running: std::sync::Mutex<BTreeMap<String, Launched>>,
    /// Accounts that ended by themselves (credentials refused), with the reason.
    /// (label, launch, reason): the launch tells an old run's end from a relaunched one's.
    ends_tx: tokio::sync::mpsc::UnboundedSender<(String, u64, String)>,
    pub(crate) ends: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, u64, String)>>>,
    launches: std::sync::atomic::AtomicU64,
    /// The build, the last reload's outcome: the process's, not an account's.
    pub(crate) status: status::ProcessStatus,
    /// A reload asked for from the console (the binary's reload loop takes it like a SIGHUP).
    pub(crate) reload_asked: tokio::sync::Notify,
}

struct Launched {
    spec: AccountSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<RunEnd>,
    /// Ended by itself; kept so a reload restarts it only when its configuration changed.
    ended: bool,
    generation: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        let (ends_tx, ends) = tokio::sync::mpsc::unbounded_channel();
        Fleet {
            hosts: Default::default(),
            named: Default::default(),
            stopping: Default::default(),
            started: Default::default(),
            launches: Default::default(),
            running: Default::default(),
            ends_tx,
            ends: std::sync::Mutex::new(Some(ends)),
            status: Default::default(),
            reload_asked: Default::default(),
        }
    }
}

impl Fleet {
    /// Every account's scripts, by label order.
    pub fn hosts(&self) -> Vec<ScriptHost> {
        self.hosts.lock().expect("fleet lock").values().cloned().collect()
    }

    /// Every account's label and scripts, and whether the accounts are named (labels shown).
    pub fn accounts(&self) -> (Vec<(String, ScriptHost)>, bool) {
        let hosts = self.hosts.lock().expect("fleet lock");
        (hosts.iter().map(|(n, h)| (n.clone(), h.clone())).collect(), self.named.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Lists an opened account's scripts (it does not run yet).
    pub(crate) fn add(&self, account: &Account) {
        self.named.store(account.spec.name.is_some(), std::sync::atomic::Ordering::Relaxed);
        self.hosts.lock().expect("fleet lock").insert(account.spec.label().to_string(), account.scripts().clone());
    }

    /// Starts an opened account's run as a task of its own (not once the agent stops: a reload
    /// racing the shutdown must not start an account nobody would stop).
    pub(crate) fn launch(&self, account: Account, recorder: Option<record::Recorder>) {
        // Checked and inserted under the lock `stop_all` takes: no account starts after it.
        let mut running = self.running.lock().expect("fleet lock");
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.add(&account);
        let label = account.spec.label().to_string();
        let spec = account.spec.clone();
        let (stop, stopped) = watch::channel(false);
        let ends = self.ends_tx.clone();
        let name = label.clone();
        let generation = self.launches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let host = account.scripts().clone();
        let task = tokio::spawn(async move {
            let end = survive_panic(&name, account.run(stopped, recorder), &host).await;
            if let RunEnd::CredentialsRefused(reason) = &end {
                let _ = ends.send((name, generation, reason.clone()));
            }
            end
        });
        running.insert(label, Launched { spec, stop, task, ended: false, generation });
    }

    pub(crate) fn any_running(&self) -> bool {
        self.running.lock().expect("fleet lock").values().any(|l| !l.ended)
    }

    pub(crate) fn ended(&self, label: &str, generation: u64) {
        if let Some(l) = self.running.lock().expect("fleet lock").get_mut(label).filter(|l| l.generation == generation) {
            l.ended = true;
        }
    }

    /// The specs of the accounts launched (for a reload to compare with).
    pub(crate) fn specs(&self) -> BTreeMap<String, AccountSpec> {
        self.running.lock().expect("fleet lock").iter().map(|(n, l)| (n.clone(), l.spec.clone())).collect()
    }

    /// Stops one account (it deletes its application) and forgets it.
    pub(crate) async fn remove(&self, label: &str) -> Option<RunEnd> {
        let launched = self.running.lock().expect("fleet lock").remove(label)?;
        let _ = launched.stop.send(true);
        let end = launched.task.await.unwrap_or(RunEnd::Stopped);
        self.hosts.lock().expect("fleet lock").remove(label);
        Some(end)
    }

    /// Stops every account at once and waits for all of them.
    pub(crate) async fn stop_all(&self) -> Vec<RunEnd> {
        let all: Vec<Launched> = {
            let mut running = self.running.lock().expect("fleet lock");
            self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
            std::mem::take(&mut *running).into_values().collect()
        };
        for l in &all {
            let _ = l.stop.send(true);
        }
        let ends = futures_util::future::join_all(all.into_iter().map(|l| l.task)).await;
        ends.into_iter().map(|e| e.unwrap_or(RunEnd::Stopped)).collect()
    }
}

/// An account's run; a panic in it (a bug) ends that account alone, which says so: an ERROR
/// line and its health `stopped` with the reason (`/healthz` 503), where it went on showing
/// its last state (`polling`: 200) while nothing ran. Its scripts stop as at a shutdown (their
/// timers would go on running beside a dead account), and it leaves the pool's session.
///
/// Not an `async fn` taking the run: its state would hold the run future twice (the argument
/// and the wrapper it is moved into), several KiB more per account.
fn survive_panic<'a>(
    label: &'a str,
    run: impl std::future::Future<Output = RunEnd> + 'a,
    host: &'a ScriptHost,
) -> impl std::future::Future<Output = RunEnd> + 'a {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(run).catch_unwind().then(move |ended| async move {
        match ended {
            Ok(end) => end,
            Err(panic) => stop_panicked(label, panic, host).await,
        }
    })
}

async fn stop_panicked(label: &str, panic: Box<dyn std::any::Any + Send>, host: &ScriptHost) -> RunEnd {
    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
    tracing::error!(account = %label, panic = %what, "account stopped by an internal error (please report it); the other accounts go on, a restart of the agent runs it again");
    host.env().metrics.set_health(HealthState::Stopped, Some(format!("internal error (the account's run panicked): {what}")));
    host.env().session.set(None);
    host.shutdown(super::end::SHUTDOWN_GRACE).await;
    RunEnd::Stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_account_run_ends_as_stopped_its_health_says_why_and_its_scripts_stop() {
        use crate::script::{Limits, ScriptEnv, ScriptSettings};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("timer.lua"), "agent.every(10, function() end)\n").unwrap();
        let env = ScriptEnv::new(ScriptSettings::new(Limits::default()), std::sync::Arc::new(crate::store::Store::in_memory()));
        let host = ScriptHost::with_env(dir.path().to_path_buf(), env);
        host.load_dir().await.unwrap();
        assert_eq!(host.statuses().len(), 1);
        host.env().metrics.set_health(HealthState::Polling, None);
        let end = survive_panic("reception", async { panic!("seq overflow") }, &host).await;
        assert!(matches!(end, RunEnd::Stopped));
        let h = host.env().metrics.health();
        assert_eq!(h.state, HealthState::Stopped);
        assert!(h.last_error.as_deref().is_some_and(|e| e.contains("internal error") && e.contains("seq overflow")), "{h:?}");
        assert!(host.statuses().is_empty(), "its scripts were stopped");
        assert!(matches!(survive_panic("reception", async { RunEnd::Stopped }, &host).await, RunEnd::Stopped));
    }
}
