//! Tools for script authors, away from any pool:
//!
//! (`run --record` / `record`, which writes what `replay` reads, is the agent's: `agent::record`.)
//!
//! - `check.rs`: load the configuration and every script as `run` would, without signing in.
//! - `names.rs`: `check`'s search for `agent.*` names that do not exist.
//! - `manual.rs`: the manual pages' sections besides the options (exit status, signals, files, keys).
//! - `simulate.rs`: `ucwa-agent simulate`, the simulator as a standalone server with the
//!   `[simulator]` settings of the configuration.
//! - `replay.rs`: feed a recorded (or sample) file through the scripts offline.
//! - `traces.rs`: `trace` (scripts' traces from the state databases) and `tap` (live, from a
//!   running agent's `/api/tap`).
//! - `state.rs`: `state export` / `state import`, an account's state moved between agents.
//! - `lua_test.rs`: run `*_test.lua` files with helpers to build events, a fake clock, fake
//!   UCWA and webhook answers, and assertions.

pub mod check;
pub mod lua_test;
pub mod manual;
pub mod names;
pub mod replay;
pub mod simulate;
pub mod state;
pub mod traces;

pub(crate) use crate::script::offline_env::{offline_env, Offline};
pub use crate::script::offline_env::{OFFLINE_APPLICATION, REPLAY_EPOCH_MS};
