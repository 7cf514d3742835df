//! The nouns of the simulated pool: calls, applications, accounts' settings, messaging
//! conversations and presence subscriptions, as `SimState` holds them and the routes and flows
//! read them. A leaf: it names no other part of the simulator but the channel it embeds.

use super::channel::Channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Incoming,
    Outgoing,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "Incoming",
            Direction::Outgoing => "Outgoing",
        }
    }
}

/// What happens when the call has rung for its ring time.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The call is answered (by the account on another endpoint, or by the callee for outgoing).
    #[default]
    Answered,
    /// Nobody answers: the invitation completes with Failure / Missed.
    Missed,
    /// The call rings until a client POSTs `acceptWithAnswer` or `decline` (or the control API
    /// ends it); Missed after `ring_ms` if given, else after [`WAIT_FOR_ACCEPT_MAX`].
    WaitForAccept,
}

/// How long a `wait_for_accept` call rings when its spec names no `ring_ms`.
pub const WAIT_FOR_ACCEPT_MAX: Duration = Duration::from_secs(120);

/// A call to start, from the control API, the generator or `startAudioVideo`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    #[serde(default)]
    pub direction: Direction,
    /// The remote party's SIP URI.
    #[serde(default)]
    pub remote: Option<String>,
    /// The remote party's display name.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// The local user whose application rings (default: the newest available application).
    #[serde(default)]
    pub user: Option<String>,
    /// How long it rings (default: the simulator's ring time).
    #[serde(default)]
    pub ring_ms: Option<u64>,
    /// How long it lasts once answered; absent: until ended through the control API or a client.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub outcome: CallOutcome,
    /// Echoed in the invitation (`operationId`), as a client's startAudioVideo sends it.
    #[serde(default)]
    pub operation_id: Option<String>,
}

/// What a client or the control API asks of a running call.
#[derive(Debug)]
pub(crate) enum CallCommand {
    Accept,
    Decline,
    /// Hang up (`stopAudioVideo`, control API) or cancel while ringing.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Ringing,
    Connected,
    Ended,
}

/// A call in progress, as the resources describe it.
#[derive(Debug)]
pub(crate) struct CallRecord {
    /// Also the conversation id.
    pub id: u64,
    pub app_id: u64,
    /// 32 hex digits, as in the captured invitation href.
    pub invitation_id: String,
    pub direction: Direction,
    pub remote_uri: String,
    pub remote_name: String,
    pub local_uri: String,
    pub subject: String,
    pub thread_id: String,
    pub operation_id: String,
    pub session_context: String,
    /// The phone an incoming call was answered on (`acceptWithPhoneAudio`).
    pub answered_on: Option<String>,
    /// When the call started (wall clock, ms since the epoch): the conversation's `created`.
    pub created_ms: i64,
    pub phase: Phase,
    /// Whether it was ever answered (an ended invitation then reads Connected, not Failed).
    pub answered: bool,
    /// `audioVideoSession.state`: Establishing, then Established.
    pub session_state: &'static str,
    /// The call task's mailbox.
    pub commands: mpsc::UnboundedSender<CallCommand>,
}

/// An issued token.
#[derive(Debug)]
pub(crate) struct Token {
    /// Whose token it is; resources are answered for this user.
    pub user: String,
    pub expires_at: Instant,
}

/// One UCWA application.
#[derive(Debug)]
pub(crate) struct App {
    pub id: u64,
    pub user: String,
    /// With culture and user agent, identifies the application for a repeated create.
    pub endpoint_id: String,
    pub user_agent: String,
    pub culture: String,
    /// Set by makeMeAvailable: incoming calls reach only available applications.
    pub available: bool,
    /// What makeMeAvailable announced (`SupportedModalities`).
    pub modalities: Vec<String>,
    /// The GUID-named property of `communication`.
    pub communication_key: String,
    /// `communication`'s etag, bumped when it changes.
    pub etag: u64,
    pub channel: Channel,
    /// The last request of any kind to this application (reportMyActivity included).
    pub last_seen: Instant,
}

/// What an account set about itself (presence and note), shared by its applications.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profile {
    /// Set by `POST me/presence`; None: `Online` while an application is available.
    pub availability: Option<String>,
    pub note: String,
    /// `Off`, `ImmediateForward` or `SimultaneousRing`, and where to.
    pub forwarding: Forwarding,
}

#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    pub setting: &'static str,
    /// A `sip:` or `tel:` URI, or `voicemail`.
    pub target: String,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding { setting: "Off", target: String::new() }
    }
}

/// A message, as the control API lists it.
#[derive(Debug, Clone)]
pub(crate) struct SentMessage {
    pub from: String,
    pub to: String,
    pub text: String,
    /// The conversation's href (a path).
    pub conversation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImPhase {
    /// Incoming, waiting for `accept` or `decline`.
    Invited,
    Connected,
    /// Ended by `decline`.
    Declined,
    /// Ended by `stopMessaging` (or the application went away).
    Ended,
}

/// One messaging conversation of one application.
#[derive(Debug)]
pub(crate) struct ImConversation {
    /// The conversation's id (`communication/conversations/<id>`).
    pub id: u64,
    pub app_id: u64,
    /// `communication/messagingInvitations/<invitation_id>`.
    pub invitation_id: u64,
    /// `Incoming` or `Outgoing`.
    pub direction: &'static str,
    /// `sip:` URI of the account.
    pub local: String,
    /// `sip:` URI of the other party.
    pub remote: String,
    pub phase: ImPhase,
    /// The invitation's first message, if any (its `message` link).
    pub first: Option<String>,
    /// Incoming messages that arrived before `accept`: delivered when accepted.
    pub waiting: Vec<String>,
    /// The messages of the conversation, in order (`messages/<n>`, n from 1).
    pub messages: Vec<Message>,
    pub thread_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub direction: &'static str,
    pub text: String,
    /// Milliseconds since the epoch.
    pub at_ms: i64,
}

/// One live subscription.
#[derive(Debug)]
pub(crate) struct PresenceSub {
    pub id: String,
    pub app_id: u64,
    /// Addresses (no `sip:`, lower case).
    pub members: BTreeSet<String>,
    pub expires_at: Instant,
    /// When the "about to expire" event goes out.
    pub warn_at: Instant,
    pub warned: bool,
    /// How many times it was extended.
    pub extensions: u64,
}
