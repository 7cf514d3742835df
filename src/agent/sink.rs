//! Where the channel's events go: into the journal (numbered, with the channel position, in one
//! transaction), then into every script's inbox.

use crate::script::ScriptHost;
use crate::store::{Position, Store, StoreError};
use crate::ucwa::{batch, Event, Origin};
use serde_json::Value;
use std::sync::Arc;

/// Batches between two prunings of the journal.
const PRUNE_EVERY: u32 = 64;

pub struct EventSink {
    host: ScriptHost,
    store: Arc<Store>,
    /// Where the channel stands; its `next` is updated with every batch journaled.
    position: Option<Position>,
    /// The href synthetic `agent` events carry (the application).
    agent_href: String,
    journal_max_events: u64,
    batches: u32,
    /// `--record FILE`: every batch received, as received.
    recorder: Option<super::record::Recorder>,
}

impl EventSink {
    pub fn new(host: ScriptHost, store: Arc<Store>, journal_max_events: u64) -> EventSink {
        EventSink { host, store, position: None, agent_href: String::new(), journal_max_events, batches: 0, recorder: None }
    }

    /// Records every batch received from now on.
    pub fn record_to(&mut self, recorder: super::record::Recorder) {
        self.recorder = Some(recorder);
    }

    /// Appends a batch as received to the recording, if one is being made.
    pub fn record(&self, body: &[u8]) {
        if let Some(r) = &self.recorder {
            r.record(body);
        }
    }

    /// The application events now come from (and where its channel starts).
    pub fn set_position(&mut self, position: Option<Position>) {
        if let Some(p) = &position {
            self.agent_href = pool_origin(Some(&p.pool)).absolute(&p.application);
        }
        if let Err(error) = self.store.save_position(position.as_ref()) {
            tracing::error!(%error, "cannot save the channel position");
        }
        self.position = position;
    }

    /// Journals a response body (decoded to `events`) together with the href to poll next,
    /// then queues the events for every script. On error nothing was journaled and nothing
    /// dispatched: poll the same ack again.
    pub fn deliver(&mut self, origin: &Origin, body: &[u8], mut events: Vec<Event>, next: Option<&str>) -> Result<(), StoreError> {
        if let (Some(p), Some(n)) = (&mut self.position, next) {
            p.next = n.to_string();
        }
        if events.is_empty() && next.is_none() {
            return Ok(());
        }
        let position = next.and(self.position.as_ref());
        self.store.append(origin, body, &mut events, position)?;
        // Rels and types the pool chooses: only the documented ones become label values.
        self.host.env().metrics.batch(events.iter().map(|e| (e.rel(), e.kind())), (crate::ucwa::rels::label_rel, crate::ucwa::rels::label_type));
        let watches = &self.host.env().watches;
        for ev in &events {
            tracing::debug!(rel = %ev.rel(), r#type = %ev.kind(), seq = ev.seq, href = %ev.href(), "event");
            match (ev.rel(), ev.kind()) {
                ("presenceSubscription", "updated") => watches.expiring.notify_one(),
                ("presenceSubscription", "deleted") | ("agent", "resync") => watches.lost.notify_one(),
                _ => {}
            }
        }
        if events.is_empty() {
            // (An idle account's empty batch leaves the journal as it was.)
            return Ok(());
        }
        self.host.dispatch(events);
        self.batches += 1;
        if self.batches.is_multiple_of(PRUNE_EVERY) {
            self.prune();
        }
        Ok(())
    }

    /// Journals and queues one of the agent's own events (`rel = "agent"`): signedIn,
    /// signedOut, resync.
    pub fn synthetic(&mut self, kind: &str, detail: Value) {
        let body = batch::synthetic_body(&[(kind, &self.agent_href, detail)]);
        let origin = self.origin();
        let events = batch::parse(&body, &origin).expect("the agent's own events decode").events;
        if let Err(error) = self.deliver(&origin, &body, events, None) {
            tracing::error!(%error, kind, "cannot journal the agent's own event");
        }
    }

    /// The pool origin (the journal decodes stored bodies against it).
    fn origin(&self) -> Origin {
        pool_origin(self.position.as_ref().map(|p| p.pool.as_str()))
    }

    /// Drops journal entries every loaded script has finished.
    pub fn prune(&self) {
        let names: Vec<String> = self.host.scripts().into_iter().map(|(n, _)| n).collect();
        match self.store.prune(&names, self.journal_max_events) {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "journal pruned"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot prune the journal"),
        }
    }
}

/// The pool's origin, or a placeholder before sign-in (the agent's own events carry absolute
/// hrefs, so any origin decodes them).
fn pool_origin(pool: Option<&str>) -> Origin {
    let url = pool.and_then(|p| url::Url::parse(p).ok()).unwrap_or_else(|| url::Url::parse("http://agent.invalid/").expect("a valid URL"));
    Origin::of(&url)
}
