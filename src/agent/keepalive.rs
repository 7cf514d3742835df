//! Keep-alive: `reportMyActivity` every `keepalive_secs` while the application lives, so the
//! account's availability does not drop to Away (PROTOCOL.md §3).

use crate::ucwa::application::{self, Application};
use crate::ucwa::Session;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Starts the keep-alive task; abort it when the application ends. Without a
/// reportMyActivity link (a pool that does not offer it) nothing is sent: said once.
pub fn spawn(session: Arc<Session>, app: Application, every: Duration) -> tokio::task::JoinHandle<()> {
    let Some(href) = app.report_activity.clone() else {
        tracing::warn!(application = %app.self_href, "the pool links no reportMyActivity: no keep-alive is sent (the account may show as Away)");
        return tokio::spawn(async {});
    };
    tokio::spawn(run(every, move || {
        let (session, href) = (session.clone(), href.clone());
        async move {
            match application::report_activity(&session, &href).await {
                Ok(()) => tracing::debug!("reportMyActivity sent"),
                Err(error) => tracing::warn!(%error, "reportMyActivity failed"),
            }
        }
    }))
}

/// Calls `report` every `every`, first after one interval (makeMeAvailable just counted as
/// activity); a slow report delays the next one rather than bunching them up.
pub async fn run<F, Fut>(every: Duration, mut report: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        report().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn reports_on_schedule_and_a_slow_report_delays_the_next() {
        let calls = Arc::new(AtomicU32::new(0));
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Instant::now();
        let (c, t) = (calls.clone(), times.clone());
        let task = tokio::spawn(run(Duration::from_secs(180), move || {
            let (c, t) = (c.clone(), t.clone());
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                t.lock().unwrap().push(start.elapsed().as_secs());
                if n == 1 {
                    tokio::time::sleep(Duration::from_secs(200)).await; // longer than the interval
                }
            }
        }));
        tokio::time::sleep(Duration::from_secs(179)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing before the first interval");
        tokio::time::sleep(Duration::from_secs(1000)).await;
        task.abort();
        assert_eq!(*times.lock().unwrap(), [180, 360, 560, 740, 920, 1100]);
    }
}
