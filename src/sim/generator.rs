//! The demo's call generator: `calls_per_minute` calls, most answered, some missed, taking
//! turns over the users that are available (one call each in turn, with several accounts).

use super::calls;
use super::model::{CallOutcome, CallSpec};
use super::shared::Shared;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Duration};

const CALLERS: &[(&str, &str)] = &[
    ("sip:alice@fabrikam.com", "Alice Ahmed"),
    ("sip:bob@contoso.com", "Bob Brown"),
    ("sip:chen@fabrikam.com", "Chen Wei"),
    ("sip:dana@contoso.com", "Dana Diaz"),
    ("sip:eve@litware.com", "Eve Ekberg"),
];

/// Starts the generator when the configuration asks for calls; it ends with the simulator.
pub(crate) fn spawn(shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    let per_minute = shared.config.calls_per_minute;
    if per_minute <= 0.0 || !per_minute.is_finite() {
        return None;
    }
    let gap = Duration::from_secs_f64(60.0 / per_minute);
    Some(tokio::spawn(async move {
        let mut n: usize = 0;
        // The first call comes soon, so a demo shows something within seconds.
        sleep(gap.min(Duration::from_secs(3))).await;
        loop {
            let (remote, name) = CALLERS[n % CALLERS.len()];
            let user = {
                let st = shared.lock();
                let mut available: Vec<&str> = st.apps.values().filter(|a| a.available).map(|a| a.user.as_str()).collect();
                available.sort_unstable();
                available.dedup();
                (!available.is_empty()).then(|| (available[n % available.len()].to_string(), available.len()))
            };
            // Every fourth call of each user goes unanswered, so scripts see missed calls too.
            let missed = (n / user.as_ref().map_or(1, |(_, count)| *count)) % 4 == 3;
            let user = user.map(|(u, _)| u);
            let spec = CallSpec {
                remote: Some(remote.to_string()),
                name: Some(name.to_string()),
                subject: Some(format!("Demo call {}", n + 1)),
                duration_ms: Some(shared.config.call_duration.as_millis() as u64),
                outcome: if missed { CallOutcome::Missed } else { CallOutcome::Answered },
                user,
                ..CallSpec::default()
            };
            match calls::start_call(&shared, spec, None) {
                Ok(id) => tracing::debug!(call = id, "simulator generated a call"),
                Err(reason) => tracing::debug!(%reason, "simulator skipped a generated call"),
            }
            n += 1;
            sleep(gap).await;
        }
    }))
}
