//! Everything the simulated pool remembers, behind one mutex held only for short, non-async steps.

use super::calls::CallRecord;
use super::channel::{Channel, SimEvent};
use super::resources::app_path;
use super::SimConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A fault the control API injects into the next event-channel requests.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this 5xx status (`ServiceFailure` / `ServiceUnavailable`), optionally with `Retry-After`.
    ServerError {
        #[serde(default = "default_5xx")]
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// 429 TooManyRequests, optionally with `Retry-After`.
    TooManyRequests {
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Send the headers and part of the body, then drop the connection.
    DropConnection,
    /// A 200 whose body is not valid JSON.
    MalformedBody,
    /// Answer with a `resync` link instead of the batch.
    Resync,
    /// Answer with a `resume` link instead of the batch, as a pool does after cleaning up
    /// following a long gap in polling.
    Resume,
    /// Every token of every user stops being valid now (applied at once, not queued).
    TokenExpiry,
    /// Every application is deleted now (applied at once, not queued).
    ApplicationGone,
    /// A 200 whose body never ends (chunked, about 1 GiB of padding after a batch's start),
    /// gzip-compressed when `gzip` (a "gzip bomb": about 1 MiB on the wire): what a broken proxy
    /// or a hostile pool may send. A client must stop reading, not run out of memory.
    EndlessBody {
        #[serde(default)]
        gzip: bool,
    },
    /// The next batch carries, before its real events, one event without `type` (a broken
    /// pool's event): a client should skip that one event and deliver the rest.
    MalformedEvent,
}

/// Every `kind` of `Fault`, as the control API names them (its error message lists them; a
/// test checks each deserializes).
pub(crate) const FAULT_KINDS: &[&str] = &[
    "server_error",
    "too_many_requests",
    "drop_connection",
    "malformed_body",
    "resync",
    "resume",
    "token_expiry",
    "application_gone",
    "endless_body",
    "malformed_event",
];

impl SimState {
    /// Takes one use of the first fault meant for `user` (or for any account).
    pub(crate) fn take_fault(&mut self, user: &str) -> Option<Fault> {
        let i = self.faults.iter().position(|(who, _, _)| who.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(user)))?;
        let entry = &mut self.faults[i];
        entry.2 -= 1;
        let fault = entry.1.clone();
        if entry.2 == 0 {
            self.faults.remove(i);
        }
        Some(fault)
    }
}

fn default_5xx() -> u16 {
    503
}

/// Counters the control API reports, for tests and for users watching the simulator.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub polls: AtomicU64,
    pub batches: AtomicU64,
    pub empty_batches: AtomicU64,
    pub repeated_batches: AtomicU64,
    pub events: AtomicU64,
    pub resyncs: AtomicU64,
    pub resumes: AtomicU64,
    pub pget_replaced: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub token_rejections: AtomicU64,
    pub unauthorized: AtomicU64,
    pub applications_created: AtomicU64,
    pub applications_deleted: AtomicU64,
    pub applications_expired: AtomicU64,
    pub report_my_activity: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    /// Incoming calls not offered: the account forwards every call.
    pub calls_forwarded: AtomicU64,
    pub faults_applied: AtomicU64,
    pub presence_subscriptions_created: AtomicU64,
    pub presence_subscriptions_extended: AtomicU64,
    pub presence_subscriptions_expired: AtomicU64,
    pub presence_subscriptions_deleted: AtomicU64,
    /// Events delivered in batches, by user.
    pub events_by_user: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "polls": g(&self.polls), "batches": g(&self.batches), "empty_batches": g(&self.empty_batches),
            "repeated_batches": g(&self.repeated_batches), "events": g(&self.events), "resyncs": g(&self.resyncs), "resumes": g(&self.resumes),
            "pget_replaced": g(&self.pget_replaced), "tokens_issued": g(&self.tokens_issued),
            "token_rejections": g(&self.token_rejections), "unauthorized": g(&self.unauthorized),
            "applications_created": g(&self.applications_created),
            "applications_deleted": g(&self.applications_deleted),
            "applications_expired": g(&self.applications_expired),
            "report_my_activity": g(&self.report_my_activity), "calls_started": g(&self.calls_started),
            "calls_ended": g(&self.calls_ended), "calls_forwarded": g(&self.calls_forwarded), "faults_applied": g(&self.faults_applied),
            "presence_subscriptions_created": g(&self.presence_subscriptions_created),
            "presence_subscriptions_extended": g(&self.presence_subscriptions_extended),
            "presence_subscriptions_expired": g(&self.presence_subscriptions_expired),
            "presence_subscriptions_deleted": g(&self.presence_subscriptions_deleted),
            "events_by_user": *self.events_by_user.lock().expect("counters lock"),
        })
    }
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

pub(crate) struct SimState {
    pub users: HashMap<String, String>,
    /// user → what the account set.
    pub profiles: HashMap<String, Profile>,
    /// address (no `sip:`, lower case) → the availability the control API gave that contact.
    pub contact_presence: HashMap<String, String>,
    /// Instant messages, both ways, in order (the latest `messaging::KEEP`).
    pub messages: VecDeque<super::messaging::SentMessage>,
    /// Live messaging conversations, by conversation id.
    pub im: BTreeMap<u64, super::messaging::ImConversation>,
    /// Ended messaging conversations, oldest first (the latest `messaging::KEEP`), for the control API.
    pub ended_im: VecDeque<super::messaging::ImConversation>,
    /// Ended calls as the control API lists them, oldest first (the latest `calls::KEEP_ENDED`):
    /// a declined or missed call can be read back after it is gone from the pool.
    pub ended_calls: VecDeque<serde_json::Value>,
    pub tokens: HashMap<String, Token>,
    pub apps: BTreeMap<u64, App>,
    pub calls: BTreeMap<u64, CallRecord>,
    /// Faults waiting for the next event-channel requests, in order: (user, fault, times left).
    /// A count, not copies: `count = 1e9` costs one entry.
    pub faults: VecDeque<(Option<String>, Fault, u64)>,
    /// The quirks on now (`SimConfig::quirks`, changed by the control API).
    pub quirks: super::Quirks,
    /// Live presence subscriptions, by id.
    pub presence_subs: BTreeMap<String, super::presence::PresenceSub>,
    next_id: u64,
}

impl SimState {
    pub(crate) fn new(config: &SimConfig) -> Self {
        SimState {
            users: config.users.iter().cloned().collect(),
            profiles: HashMap::new(),
            contact_presence: HashMap::new(),
            messages: VecDeque::new(),
            im: BTreeMap::new(),
            ended_im: VecDeque::new(),
            ended_calls: VecDeque::new(),
            tokens: HashMap::new(),
            apps: BTreeMap::new(),
            calls: BTreeMap::new(),
            faults: VecDeque::new(),
            quirks: config.quirks.clone(),
            presence_subs: BTreeMap::new(),
            // Real ids are 11-12 digits; starting high makes hrefs look like a pool's.
            next_id: 10_672_188_129,
        }
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The user a bearer token stands for, if it is known and not expired.
    pub(crate) fn token_user(&self, token: &str, now: Instant) -> Option<String> {
        self.tokens.get(token).filter(|t| t.expires_at > now).map(|t| t.user.clone())
    }

    /// Removes applications nobody polls any more (PROTOCOL.md §3 keep-alive) and their calls.
    pub(crate) fn expire_idle(&mut self, config: &SimConfig, now: Instant, counters: &Counters) {
        let expired: Vec<u64> = self
            .apps
            .values()
            .filter(|a| {
                let idle_since = a.channel.last_release.max(a.last_seen);
                !a.channel.has_waiter() && now.duration_since(idle_since) > config.app_idle_timeout
            })
            .map(|a| a.id)
            .collect();
        for id in expired {
            Counters::bump(&counters.applications_expired);
            self.remove_app(id);
        }
    }

    /// Deletes an application; its calls and conversations end without events (there is no channel left to carry them).
    pub(crate) fn remove_app(&mut self, id: u64) {
        if let Some(app) = self.apps.remove(&id) {
            app.channel.close();
        }
        self.calls.retain(|_, c| c.app_id != id);
        super::messaging::forget_app(self, id);
        self.forget_presence(id);
    }

    /// The application `id` if it exists and belongs to `user`.
    pub(crate) fn app_of(&mut self, id: u64, user: &str) -> Option<&mut App> {
        self.apps.get_mut(&id).filter(|a| a.user == user)
    }

    /// Queues events on an application's channel.
    pub(crate) fn push(&mut self, app_id: u64, events: Vec<SimEvent>) {
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.channel.push(events);
        }
    }

    /// The newest available application of `user` (or of any user), where incoming calls ring.
    pub(crate) fn ringing_target(&self, user: Option<&str>) -> Option<u64> {
        self.apps.values().rev().find(|a| a.available && user.is_none_or(|u| a.user == u)).map(|a| a.id)
    }

    /// Creates an application, or returns the existing one for the same identity (PROTOCOL.md §3).
    pub(crate) fn create_app(
        &mut self,
        user: &str,
        endpoint_id: &str,
        user_agent: &str,
        culture: &str,
        poll_timeout: std::time::Duration,
        now: Instant,
    ) -> (u64, bool) {
        if let Some(app) = self.apps.values_mut().find(|a| a.user == user && a.endpoint_id == endpoint_id && a.user_agent == user_agent && a.culture == culture)
        {
            app.last_seen = now;
            return (app.id, false);
        }
        let id = self.next_id();
        let key = format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", id as u32, id % 0xffff, id % 0xfff, (id >> 3) % 0xfff, id);
        let app = App {
            id,
            user: user.to_string(),
            endpoint_id: endpoint_id.to_string(),
            user_agent: user_agent.to_string(),
            culture: culture.to_string(),
            available: false,
            modalities: Vec::new(),
            communication_key: key,
            etag: id % 4_000_000_000,
            channel: Channel::new(format!("{}/events", app_path(id)), poll_timeout, now),
            last_seen: now,
        };
        self.apps.insert(id, app);
        (id, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_fault_kind_is_a_fault() {
        for kind in FAULT_KINDS {
            let f: Result<Fault, _> = serde_json::from_value(serde_json::json!({"kind": kind}));
            assert!(f.is_ok(), "{kind}: {f:?}");
        }
    }
}
