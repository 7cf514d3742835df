//! Where the channel's events go: numbered in channel order, then queued for every script.

use crate::script::ScriptHost;
use crate::ucwa::Event;
use serde_json::Value;
use std::sync::Arc;

pub struct EventSink {
    host: ScriptHost,
    /// The last delivery number handed out; `seq` of the next event is one more.
    seq: u64,
    /// The href synthetic `agent` events carry (the pool origin, or the application).
    agent_href: String,
}

impl EventSink {
    pub fn new(host: ScriptHost) -> EventSink {
        EventSink { host, seq: 0, agent_href: String::new() }
    }

    pub fn set_agent_href(&mut self, href: String) {
        self.agent_href = href;
    }

    /// Numbers and queues a batch's events, in order.
    pub fn deliver(&mut self, events: Vec<Event>) {
        for mut ev in events {
            self.seq += 1;
            ev.seq = self.seq;
            tracing::debug!(rel = %ev.rel, r#type = %ev.kind, seq = ev.seq, href = %ev.href, "event");
            self.host.dispatch(Arc::new(ev));
        }
    }

    /// Queues one of the agent's own events (`rel = "agent"`): signedIn, signedOut, resync.
    pub fn synthetic(&mut self, kind: &str, detail: Value) {
        let ev = Event::synthetic(kind, &self.agent_href, detail);
        self.deliver(vec![ev]);
    }
}
