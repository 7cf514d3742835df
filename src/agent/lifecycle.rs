//! Readiness and liveness of the fleet, for systemd's notifications (`sd_notify.rs`).

use super::fleet::Fleet;
use std::sync::Arc;
use std::time::Duration;

/// Readiness and liveness of every account, for systemd's notifications (`sd_notify.rs`).
#[derive(Clone)]
pub struct Lifecycle(pub(crate) Arc<Fleet>);

impl Lifecycle {
    /// Ready when every account polls, has stopped, or has had a sign-in attempt fail (it goes
    /// on retrying; a service manager should not wait for a pool that is down). Also a one-line
    /// status.
    pub fn readiness(&self) -> (bool, String) {
        use crate::metrics::HealthState as S;
        let hosts = self.0.hosts();
        let (mut polling, mut waiting, mut failing) = (0, 0, 0);
        for host in &hosts {
            match host.env().metrics.health_state() {
                (S::Polling | S::Recovering, _) => polling += 1,
                (S::Stopped | S::Stopping, _) => {}
                (S::SigningIn, true) => failing += 1,
                (S::Starting | S::SigningIn, _) => waiting += 1,
            }
        }
        let status = match (failing, hosts.len()) {
            (0, 1) if polling == 1 => "signed in and polling".to_string(),
            (0, n) => format!("{polling} of {n} account(s) signed in and polling"),
            (f, n) => format!("{polling} of {n} account(s) polling; {f} failing to sign in (retrying, see the log)"),
        };
        (waiting == 0, status)
    }

    /// Whether every account that polls has its event-channel loop either parked in a wait
    /// that ends by itself (a request under its timeout, a backoff) or past one by at most
    /// `within`. The loops never wake just to say so: a loop is late only when its wait's
    /// timer fired and it did not run, or it works (journals, delivers) longer than `within`.
    pub fn alive(&self, within: Duration) -> bool {
        use crate::metrics::HealthState as S;
        self.0.hosts().iter().all(|host| {
            let m = &host.env().metrics;
            !matches!(m.health_state().0, S::Polling | S::Recovering) || m.loop_overdue() <= within
        })
    }
}

/// Reloads asked for from the console (`Agent::reload_requests`).
#[derive(Clone)]
pub struct ReloadRequests(pub(crate) Arc<Fleet>);

impl ReloadRequests {
    /// Waits for the next request (one asked for while nobody waited is kept).
    pub async fn next(&self) {
        self.0.reload_asked.notified().await
    }
}
