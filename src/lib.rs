//! ucwa-agent: a headless automation agent for Skype for Business Server 2015's UCWA, running
//! user-written Lua scripts on event-channel events, with a built-in UCWA simulator.
//!
//! Layout:
//! - `config`: `config.toml`, checked, with errors that name the key.
//! - `logfmt`: the human and JSON log lines, and the default log filter.
//! - `date`: ISO 8601 and .NET `/Date(ms)/` dates ↔ milliseconds (a leaf: the client, the scripts and
//!   the simulator each use it, and share nothing else through it).
//! - `ucwa`: the client side of the protocol: origin, sign-in, session, application, batches.
//! - `agent`: the run loop: sign-in, application, keep-alive, event channel, recovery.
//! - `script`: the Lua host: sandbox, `agent` API, per-script tasks, hot reload.
//! - `metrics`: counters, histograms and health for `/metrics` and `/healthz`.
//! - `script_metrics`: the metrics scripts define (`agent.metrics`), exported beside them.
//! - `store`: the SQLite database: event journal, script cursors, `agent.state`, channel position.
//! - `tls`: HTTPS listening (the simulator, the metrics endpoint): PEM files, handshakes off the accept loop.
//! - `tools`: `check` (and `check --online`), `replay` and `test` for script authors, `simulate`.
//! - `sim`: the UCWA simulator (the embedded default, `ucwa-agent simulate`, and every test).
//!
//! `docs/ARCHITECTURE.md` has the data flow from HTTP bytes to a Lua handler.

pub mod agent;
pub mod config;
pub mod date;
pub mod logfmt;
pub mod metrics;
pub mod script;
pub mod script_metrics;
pub mod sim;
pub mod store;
pub mod tls;
pub mod tools;
pub mod ucwa;
