//! The local web console on the endpoint's listener (`/`): accounts, their scripts, recent
//! events with each script's trace as a timeline, a live tail (`/api/tap`), and a dry run of an
//! event against the current scripts. Read-only unless `metrics.admin_token_env` names a token.
//!
//! - `routes.rs`: the routes, mounted by `endpoints.rs`.
//! - `api.rs`: the JSON the page reads (`/api/accounts`, `/api/scripts`, `/api/events`).
//! - `shared.rs`: what they share: the console's state, the queries.
//! - `token.rs`: the admin token; `admin.rs`: the actions it allows (resume a script, reload).
//! - `dryrun.rs`: an event run again through the scripts offline (`/api/dryrun`).
//! - `assets.rs` (and `assets/`): the page, its style and script, embedded in the binary.

mod admin;
mod api;
mod assets;
mod dryrun;
mod routes;
mod shared;
mod token;

pub(crate) use routes::router;
pub(crate) use token::AdminToken;
