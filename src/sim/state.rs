//! Everything the simulated pool remembers, behind one mutex held only for short, non-async steps.

use super::channel::{Channel, SimEvent};
use super::config::SimConfig;
use super::fault::Fault;
use super::model::{App, CallRecord, ImConversation, PresenceSub, Profile, SentMessage, Token};
use super::paths::app_path;
use super::quirks::Quirks;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

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

pub(crate) struct SimState {
    pub users: HashMap<String, String>,
    /// user → what the account set.
    pub profiles: HashMap<String, Profile>,
    /// address (no `sip:`, lower case) → the availability the control API gave that contact.
    pub contact_presence: HashMap<String, String>,
    /// Instant messages, both ways, in order (the latest `messaging::KEEP`).
    pub messages: VecDeque<SentMessage>,
    /// Live messaging conversations, by conversation id.
    pub im: BTreeMap<u64, ImConversation>,
    /// Ended messaging conversations, oldest first (the latest `messaging::KEEP`), for the control API.
    pub ended_im: VecDeque<ImConversation>,
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
    pub quirks: Quirks,
    /// Live presence subscriptions, by id.
    pub presence_subs: BTreeMap<String, PresenceSub>,
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
        self.forget_im(id);
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
