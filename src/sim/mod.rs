//! The UCWA simulator: a Skype for Business 2015 pool on loopback, for the parts the agent uses.
//!
//! Layout, from the floor up (a file imports only files listed before it):
//! - `reply.rs`: responses with Content-Length, JSON content type and optional gzip; the error body.
//! - `form.rs`: urlencoded and multipart form bodies (the token endpoint).
//! - `channel.rs`: one application's event channel (batches, acks, the held P-GET).
//! - `quirks.rs`: real pools' deviations from the documented shapes.
//! - `config.rs`: `SimConfig` and the demo account.
//! - `fault.rs`: the faults the control API injects, and the one list of their names.
//! - `model.rs`: the nouns: calls, applications, accounts' settings, conversations, subscriptions.
//! - `paths.rs`: the hrefs of every resource.
//! - `state.rs`: everything the pool remembers, behind one mutex; counters.
//! - `shared.rs`: what every route and flow shares (`Shared`, `Req`, `Answer`, body readers).
//! - `resources.rs`, `directory.rs`, `messaging_res.rs`: the JSON shapes of the documentation's
//!   samples, with this pool's hrefs.
//! - `calls.rs`: audio/video call flows and the events they produce.
//! - `messaging.rs`: instant-message conversations both ways.
//! - `presence.rs`: presence subscriptions, their expiry, and `contactPresence` events.
//! - `poll.rs`: the event-channel request: injected faults, answer or park.
//! - `generator.rs`: the demo's call generator.
//! - `control.rs`: the `/sim/v1/` API that tests use (calls, faults, counters).
//! - `routes/`: everything under `/ucwa/oauth/v1/applications`, one file per resource family
//!   (`me`, `people`, `communication`, `invitations`, `conversations`) behind one dispatch.
//! - `server.rs`: binding, the axum service, sign-in (token, bearer check) and the top routes.
//!
//! The simulator shares nothing with the agent's client (`ucwa`); `ucwa-agent simulate` is
//! `tools::simulate`.
//!
//! Every protocol rule followed here is in `PROTOCOL.md` (shared with the agent's developers).

mod calls;
mod channel;
mod config;
mod control;
mod directory;
mod fault;
mod form;
mod generator;
mod messaging;
mod messaging_res;
mod model;
mod paths;
mod poll;
mod presence;
mod quirks;
mod reply;
mod resources;
mod routes;
mod server;
mod shared;
mod state;

pub use crate::tls::TlsFiles;
pub use config::{SimConfig, DEMO_PASSWORD, DEMO_USER};
pub use fault::Fault;
pub use model::{CallOutcome, CallSpec, Direction};
pub use quirks::{Quirk, Quirks};
pub use server::{Simulator, UserAdder};
