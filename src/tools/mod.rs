//! Tools for script authors, away from any pool:
//!
//! (`run --record` / `record`, which writes what `replay` reads, is the agent's: `agent::record`.)
//!
//! - `check.rs`: load the configuration and every script as `run` would, without signing in.
//! - `names.rs`: `check`'s search for `agent.*` names that do not exist.
//! - `manual.rs`: the manual pages' sections besides the options (exit status, signals, files, keys).
//! - `online.rs`: `check --online`, the sign-in walked step by step against the pool.
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
pub mod online;
pub mod replay;
pub mod state;
pub mod traces;

/// The agent's offline environment: in-memory database, manual clock, nothing sent anywhere.
/// (`check` reads the secrets, as `run` would, to say whether they are there; `replay` and
/// `test` set `secret_placeholders`.) Hrefs are on `origin`; the application is at
/// `application` (a path); `missing` is what a GET nothing answers says.
pub(crate) fn offline_env(mut settings: crate::script::ScriptSettings, enforce_allowlist: bool, trace: bool, at: Offline<'_>) -> crate::script::ScriptEnv {
    use crate::script::{offline::OfflineNet, Clock, Net, ScriptEnv};
    // Nothing offline keeps traces (the database is in memory).
    settings.traces_per_script = 0;
    let mut env = ScriptEnv::new(settings, std::sync::Arc::new(crate::store::Store::in_memory()));
    env.clock = Clock::manual(REPLAY_EPOCH_MS);
    let net = std::sync::Arc::new(OfflineNet::new(enforce_allowlist).at(at.origin, at.application, at.missing));
    // An application as the simulator's, so `agent.me` and `agent.calls` find their links
    // (what they send is listed as would-send, like any request).
    net.learn(at.application, Some(&offline_application(at.application)), false);
    env.application.set(Some(at.application.to_string()));
    env.net = Net::Offline(net);
    env.trace = trace;
    env
}

/// Where an offline environment's hrefs are, and what a GET that nothing answers says.
#[derive(Clone, Copy)]
pub(crate) struct Offline<'a> {
    pub origin: &'a str,
    pub application: &'a str,
    pub missing: &'a str,
}

/// The application href of `test`, and of `replay` when the recording names none.
pub const OFFLINE_APPLICATION: &str = "/ucwa/oauth/v1/applications/1";

fn offline_application(p: &str) -> serde_json::Value {
    serde_json::json!({
        "rel": "application",
        "_links": {"self": {"href": p}, "events": {"href": format!("{p}/events?ack=1")}},
        "_embedded": {
            "me": {"rel": "me", "uri": "sip:demo@contoso.com", "name": "Demo", "_links": {
                "self": {"href": format!("{p}/me")},
                "presence": {"href": format!("{p}/me/presence")},
                "note": {"href": format!("{p}/me/note")},
            }},
            "people": {"rel": "people", "_links": {
                "self": {"href": format!("{p}/people")},
                "search": {"href": format!("{p}/people/search")},
            }},
            "communication": {"rel": "communication", "_links": {
                "self": {"href": format!("{p}/communication")},
                "startAudioVideo": {"href": format!("{p}/communication/audioVideoInvitations")},
                "startMessaging": {"href": format!("{p}/communication/messagingInvitations")},
            }},
        },
    })
}

/// Where the manual clock of `replay` and `test` starts: 2026-01-01T00:00:00Z.
pub const REPLAY_EPOCH_MS: i64 = 1_767_225_600_000;
