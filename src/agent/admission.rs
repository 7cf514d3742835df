//! How many accounts of the process sign in at once. At start every account signs in (and
//! creates its application) together: 10,000 accounts would open 10,000 connections and
//! requests to the pool in the same instant, and the ones the pool (or the loopback's accept
//! queue) cannot take in time fail and wait out their backoff (1 s, 2 s, 4 s…), so the last
//! ones sign in long after the pool could have served them all. With a bound, they queue in
//! the agent instead and each runs at the pace the pool answers.

/// Sign-ins and application creations in flight at once, for the whole process: well above
/// what a pool answers in parallel, well below what overflows a listener's accept queue.
pub const AT_ONCE: usize = 64;

static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(AT_ONCE);

/// Waits for a turn; the turn lasts as long as the permit is held.
pub async fn turn() -> tokio::sync::SemaphorePermit<'static> {
    PERMITS.acquire().await.expect("the permits are never closed")
}
