//! Tools for script authors, away from any pool:
//!
//! (`run --record` / `record`, which writes what `replay` reads, is the agent's: `agent::record`.)
//!
//! - `check.rs`: load the configuration and every script as `run` would, without signing in.
//! - `online.rs`: `check --online`, the sign-in walked step by step against the pool.
//! - `replay.rs`: feed a recorded (or sample) file through the scripts offline.
//! - `lua_test.rs`: run `*_test.lua` files with helpers to build events, a fake clock, fake
//!   UCWA and webhook answers, and assertions.

pub mod check;
pub mod lua_test;
pub mod online;
pub mod replay;

/// The agent's offline environment: in-memory database, manual clock, nothing sent anywhere.
pub(crate) fn offline_env(settings: crate::script::ScriptSettings, enforce_allowlist: bool, trace: bool) -> crate::script::ScriptEnv {
    use crate::script::{offline::OfflineNet, Clock, Net, ScriptEnv};
    let mut env = ScriptEnv::new(settings, std::sync::Arc::new(crate::store::Store::in_memory()));
    env.clock = Clock::manual(REPLAY_EPOCH_MS);
    env.net = Net::Offline(std::sync::Arc::new(OfflineNet::new(enforce_allowlist)));
    env.trace = trace;
    env
}

/// Where the manual clock of `replay` and `test` starts: 2026-01-01T00:00:00Z.
pub const REPLAY_EPOCH_MS: i64 = 1_767_225_600_000;
