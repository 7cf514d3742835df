//! How a simulator behaves (`SimConfig`) and the demo account: what the configuration builds
//! and every part of the simulator reads.

use super::quirks::Quirks;
use crate::tls::TlsFiles;
use std::time::Duration;

/// How a simulator behaves; every field has a realistic default.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `user -> password` accounts that the password grant accepts.
    pub users: Vec<(String, String)>,
    /// Lifetime given to each token (`expires_in`).
    pub token_lifetime: Duration,
    /// An application with no parked P-GET for this long is gone (404 ApplicationNotFound).
    pub app_idle_timeout: Duration,
    /// The smallest `timeout` a P-GET may ask for (the real server: 180 s).
    pub min_poll_timeout: Duration,
    /// The largest `timeout` a P-GET may ask for (the real server: 1800 s).
    pub max_poll_timeout: Duration,
    /// Calls the demo generator starts per minute (0 = none).
    pub calls_per_minute: f64,
    /// How long a generated call rings before it is answered.
    pub ring_time: Duration,
    /// How long a generated call lasts once answered.
    pub call_duration: Duration,
    /// Serve HTTPS with these files instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Real pools' deviations from the documented shapes to reproduce (none by default).
    pub quirks: Quirks,
    /// How long one minute of a presence subscription's `duration` lasts (tests shorten it to
    /// see subscriptions warn, get extended and expire).
    pub presence_minute: Duration,
}

/// The demo account that `discover = "embedded"` signs in with.
pub const DEMO_USER: &str = "demo@contoso.com";
/// The demo account's password (documented in README; the simulator is loopback only).
pub const DEMO_PASSWORD: &str = "demo";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            users: vec![(DEMO_USER.to_string(), DEMO_PASSWORD.to_string())],
            token_lifetime: Duration::from_secs(28_800),
            app_idle_timeout: Duration::from_secs(15 * 60),
            min_poll_timeout: Duration::from_secs(180),
            max_poll_timeout: Duration::from_secs(1800),
            calls_per_minute: 0.0,
            ring_time: Duration::from_secs(2),
            call_duration: Duration::from_secs(20),
            tls: None,
            quirks: Quirks::new(),
            presence_minute: Duration::from_secs(60),
        }
    }
}
