//! The client side of UCWA: what the agent sends and how it reads the answers (PROTOCOL.md).
//!
//! - `origin.rs`: the pool origin; resolving hrefs and refusing any other origin.
//! - `secret.rs`: tokens and passwords that never print.
//! - `auth.rs`: the password grant or a bearer token from an env var, a file or a command.
//! - `challenge.rs`: parsing `WWW-Authenticate` for the MsRtcOAuth challenge.
//! - `session.rs`: HTTP to the pool with the bearer token, renewal on 401.
//! - `signin.rs`: discovery → challenge → token → user resource.
//! - `application.rs`: create the application, makeMeAvailable, reportMyActivity, delete.
//! - `batch.rs`: decoding an event-channel response into typed events.
//! - `wire.rs`: the usual response validated and read in one pass (serde for the rest).
//! - `head.rs`: an event's head read from its text.
//! - `event.rs`: one event, its strings packed in one allocation.
//! - `error.rs`: what can go wrong, with what to do about it.

pub mod application;
pub mod auth;
pub mod batch;
pub mod challenge;
pub mod error;
pub mod event;
mod head;
pub mod origin;
pub mod rels;
pub mod secret;
pub mod session;
pub mod signin;
mod wire;

pub use auth::{Auth, TokenSource};
pub use batch::{Batch, Continuation, Event};
pub use error::UcwaError;
pub use origin::Origin;
pub use secret::Secret;
pub use session::{HttpReply, Session};

use serde_json::Value;

/// `_links.<rel>.href` of a resource; `_links` values may also be arrays (PROTOCOL.md §3).
pub fn link<'a>(resource: &'a Value, rel: &str) -> Option<&'a str> {
    let l = resource.get("_links")?.get(rel)?;
    let l = match l {
        Value::Array(items) => items.first()?,
        other => other,
    };
    l.get("href")?.as_str()
}
