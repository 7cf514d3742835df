//! Exponential backoff with jitter, capped, honouring the server's `Retry-After`.

use rand::Rng;
use std::time::Duration;
use tokio::sync::watch;

/// The longest `Retry-After` honoured; a larger one is treated as this (a misconfigured proxy
/// must not park the agent for a day).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max: max.max(base), attempt: 0 }
    }

    /// The wait before the next retry: `base * 2^attempt` capped at `max`, jittered into
    /// `[d/2, d]` so that many agents do not retry in step; at least `retry_after` when given.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let cap = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let jittered = half + Duration::from_nanos(rand::rng().random_range(0..=half.as_nanos().min(u64::MAX as u128) as u64));
        match retry_after {
            Some(r) => r.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Waits out a backoff delay; false if shutdown came first.
pub(crate) async fn pause(backoff: &mut Backoff, retry_after: Option<Duration>, stop: &mut watch::Receiver<bool>) -> bool {
    let delay = backoff.next_delay(retry_after);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_cap = Duration::ZERO;
        for i in 0..12 {
            let d = b.next_delay(None);
            let cap = Duration::from_millis(500).saturating_mul(1 << i).min(Duration::from_secs(30));
            assert!(d >= cap / 2 && d <= cap, "attempt {i}: {d:?} not in [{:?}, {cap:?}]", cap / 2);
            assert!(cap >= last_cap);
            last_cap = cap;
        }
        assert_eq!(last_cap, Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(500));
    }

    #[test]
    fn honours_retry_after_within_reason() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(b.next_delay(Some(Duration::from_secs(86_400))), MAX_RETRY_AFTER);
    }
}
