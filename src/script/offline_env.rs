//! The agent's offline environment (`replay`, `test`, `check` and the console's dry run): an
//! in-memory database, a manual clock, requests answered locally and nothing sent anywhere.

use super::env::{Clock, Net, ScriptEnv, ScriptSettings};
use super::offline::OfflineNet;

/// The agent's offline environment: in-memory database, manual clock, nothing sent anywhere.
/// (`check` reads the secrets, as `run` would, to say whether they are there; `replay` and
/// `test` set `secret_placeholders`.) Hrefs are on `origin`; the application is at
/// `application` (a path); `missing` is what a GET nothing answers says.
pub(crate) fn offline_env(mut settings: ScriptSettings, enforce_allowlist: bool, trace: bool, at: Offline<'_>) -> ScriptEnv {
    // Nothing offline keeps traces (the database is in memory), nor drops log lines (a replay
    // of a burst shows every event's).
    settings.traces_per_script = 0;
    settings.log_rate = None;
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
