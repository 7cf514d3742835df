//! One application's event channel: numbered batches, acknowledgement by following `next`, and
//! the single held P-GET (PROTOCOL.md §4).
//!
//! Numbering: the answer to `events?ack=N` is batch N, linking `next` = `ack=N+1`; a request for
//! `ack=N+1` acknowledges batch N. Batch N is kept until then, so a repeated `ack=N` (a lost
//! response) gets the same batch again. Any other ack is out of range and answered with `resync`.

use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// One event as the server queues it, before it is put in a batch.
#[derive(Clone, Debug)]
pub(crate) struct SimEvent {
    /// `sender.rel`: the resource that owns the event's target (`communication`, `conversation`, `me`).
    pub sender_rel: &'static str,
    /// `sender.href`, relative to the pool origin like every href a real pool sends.
    pub sender_href: String,
    /// The event object itself (`link`, `type`, optional `_embedded`, `status`, `reason`).
    pub event: Value,
}

/// What a P-GET gets right away.
#[derive(Debug)]
pub(crate) enum PollStep {
    /// Answer now with this 200 body (a batch, possibly empty, or a `resync` response).
    Answer(Bytes, PollKind),
    /// No events yet: park until `notify` fires or the timeout passes, then call `finish_wait`.
    Wait { waiter: u64, notify: Arc<Notify> },
    /// This request lost to a parked one of higher priority: 409 PGetReplaced.
    Replaced,
}

/// What kind of 200 answer a poll got, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollKind {
    /// A batch carrying this many events (0 = the empty batch of a timeout).
    Batch(usize),
    /// The kept batch again, for a repeated ack.
    Repeat,
    /// A response consisting of a `resync` link.
    Resync,
}

/// The parked P-GET, if any (only one per application).
#[derive(Debug)]
struct Waiter {
    /// Identifies the request, so a replaced one can tell it lost.
    id: u64,
    /// A higher `priority` replaces a parked lower one, never the reverse.
    priority: i64,
}

#[derive(Debug)]
pub(crate) struct Channel {
    /// `/ucwa/oauth/v1/applications/<id>/events`: every link this channel hands out starts here.
    events_path: String,
    /// The last batch formed, kept until the client acknowledges it by asking for the next ack.
    kept: Option<(u64, Bytes)>,
    /// The number the next batch formed will get.
    next_batch: u64,
    /// Events not yet put in a batch.
    queued: Vec<SimEvent>,
    /// The parked P-GET.
    waiter: Option<Waiter>,
    /// Id source for waiters.
    waiter_ids: u64,
    /// Wakes parked P-GETs: on new events and when a newer request replaces the parked one.
    notify: Arc<Notify>,
    /// The `timeout` the client asked for last; remembered like the real server does.
    pub timeout: Duration,
    /// When the last P-GET was answered (application idle expiry counts from here).
    pub last_release: Instant,
}

impl Channel {
    pub(crate) fn new(events_path: String, timeout: Duration, now: Instant) -> Self {
        Channel {
            events_path,
            kept: None,
            next_batch: 1,
            queued: Vec::new(),
            waiter: None,
            waiter_ids: 0,
            notify: Arc::new(Notify::new()),
            timeout,
            last_release: now,
        }
    }

    /// The href of the first request (`…/events?ack=1`).
    pub(crate) fn first_href(&self) -> String {
        format!("{}?ack=1", self.events_path)
    }

    /// Whether a P-GET is parked right now.
    pub(crate) fn has_waiter(&self) -> bool {
        self.waiter.is_some()
    }

    /// Wakes the parked P-GET so it sees that the application is gone (it answers 404).
    pub(crate) fn close(&self) {
        self.notify.notify_waiters();
    }

    /// Queues events and wakes the parked P-GET.
    pub(crate) fn push(&mut self, events: impl IntoIterator<Item = SimEvent>) {
        let before = self.queued.len();
        self.queued.extend(events);
        if self.queued.len() > before {
            self.notify.notify_waiters();
        }
    }

    /// A P-GET for `ack` arrived.
    pub(crate) fn poll(&mut self, ack: u64, priority: i64, now: Instant) -> PollStep {
        if let Some((n, body)) = &self.kept {
            if *n == ack {
                // A repeated ack: the client did not get batch N; nothing is lost until it follows `next`.
                self.last_release = now;
                return PollStep::Answer(body.clone(), PollKind::Repeat);
            }
        }
        if ack != self.next_batch {
            let first_unacked = self.kept.as_ref().map_or(self.next_batch, |(n, _)| *n);
            self.last_release = now;
            return PollStep::Answer(self.resync_body(ack, first_unacked), PollKind::Resync);
        }
        self.kept = None; // acknowledged by asking for the next one
        if !self.queued.is_empty() {
            return self.release(now);
        }
        if let Some(parked) = &self.waiter {
            if priority < parked.priority {
                return PollStep::Replaced;
            }
        }
        self.waiter_ids += 1;
        self.waiter = Some(Waiter { id: self.waiter_ids, priority });
        // Wake the replaced request, if there was one; it finds that it is no longer the waiter.
        self.notify.notify_waiters();
        PollStep::Wait { waiter: self.waiter_ids, notify: self.notify.clone() }
    }

    /// A parked P-GET woke up (events, replacement) or timed out.
    pub(crate) fn finish_wait(&mut self, waiter: u64, timed_out: bool, now: Instant) -> Option<PollStep> {
        match &self.waiter {
            Some(w) if w.id == waiter => {}
            _ => return Some(PollStep::Replaced),
        }
        if self.queued.is_empty() && !timed_out {
            return None; // woken for another request's sake: keep waiting
        }
        self.waiter = None;
        Some(self.release(now))
    }

    /// A parked P-GET whose client went away: forget it, so the application can expire.
    pub(crate) fn abandon(&mut self, waiter: u64, now: Instant) {
        if self.waiter.as_ref().is_some_and(|w| w.id == waiter) {
            self.waiter = None;
            self.last_release = now;
        }
    }

    /// Answers the current request with a resync link to the first unacknowledged batch.
    pub(crate) fn force_resync(&mut self, ack: u64, now: Instant) -> Bytes {
        let first_unacked = self.kept.as_ref().map_or(self.next_batch, |(n, _)| *n);
        self.last_release = now;
        self.resync_body(ack, first_unacked)
    }

    /// Answers the current request with a resume link to the first unacknowledged batch (what
    /// a pool sends after it cleaned up following a long gap; nothing queued is dropped here).
    pub(crate) fn force_resume(&mut self, ack: u64, now: Instant) -> Bytes {
        let first_unacked = self.kept.as_ref().map_or(self.next_batch, |(n, _)| *n);
        self.last_release = now;
        let body = json!({"_links": {"self": {"href": self.href(ack)}, "resume": {"href": self.href(first_unacked)}}});
        Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))
    }

    /// Forms batch `next_batch` from everything queued (possibly nothing) and keeps it.
    fn release(&mut self, now: Instant) -> PollStep {
        let n = self.next_batch;
        self.next_batch += 1;
        let events = std::mem::take(&mut self.queued);
        let count = events.len();
        let mut body = Map::new();
        body.insert(
            "_links".into(),
            json!({
                "self": {"href": self.href(n)},
                "next": {"href": self.href(n + 1)},
            }),
        );
        // An empty batch carries `"sender": []`, as pools and captures show.
        body.insert("sender".into(), Value::Array(group_by_sender(events)));
        let bytes = Bytes::from(serde_json::to_vec(&Value::Object(body)).expect("JSON values serialize"));
        self.kept = Some((n, bytes.clone()));
        self.last_release = now;
        PollStep::Answer(bytes, PollKind::Batch(count))
    }

    fn resync_body(&self, ack: u64, target: u64) -> Bytes {
        let body = json!({"_links": {"self": {"href": self.href(ack)}, "resync": {"href": self.href(target)}}});
        Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))
    }

    fn href(&self, ack: u64) -> String {
        format!("{}?ack={ack}", self.events_path)
    }
}

/// Puts consecutive events of one sender under one `sender` entry; order is kept across the whole
/// response, so a sender may appear several times.
fn group_by_sender(events: Vec<SimEvent>) -> Vec<Value> {
    let mut groups: Vec<Value> = Vec::new();
    let mut last: Option<(&'static str, String)> = None;
    for e in events {
        let same = last.as_ref().is_some_and(|(r, h)| *r == e.sender_rel && *h == e.sender_href);
        if same {
            if let Some(Value::Array(list)) = groups.last_mut().and_then(|g| g.get_mut("events")) {
                list.push(e.event);
            }
        } else {
            last = Some((e.sender_rel, e.sender_href.clone()));
            groups.push(json!({"rel": e.sender_rel, "href": e.sender_href, "events": [e.event]}));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rel: &'static str, n: u64) -> SimEvent {
        SimEvent { sender_rel: rel, sender_href: format!("/{rel}"), event: json!({"link": {"rel": "x", "href": format!("/x/{n}")}, "type": "added"}) }
    }

    fn body(step: PollStep) -> Value {
        match step {
            PollStep::Answer(b, _) => serde_json::from_slice(&b).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn numbering_repeat_and_resync() {
        let now = Instant::now();
        let mut ch = Channel::new("/e".into(), Duration::from_secs(180), now);
        ch.push([ev("communication", 1), ev("communication", 2), ev("conversation", 3)]);
        let b1 = body(ch.poll(1, 0, now));
        assert_eq!(b1["_links"]["next"]["href"], "/e?ack=2");
        assert_eq!(b1["sender"].as_array().unwrap().len(), 2, "consecutive events of one sender are grouped");
        assert_eq!(body(ch.poll(1, 0, now)), b1, "a repeated ack gets the same batch");
        let r = body(ch.poll(7, 0, now));
        assert_eq!(r["_links"]["resync"]["href"], "/e?ack=1");
        assert!(matches!(ch.poll(2, 0, now), PollStep::Wait { .. }));
        let r = body(ch.poll(1, 0, now));
        assert_eq!(r["_links"]["resync"]["href"], "/e?ack=2", "batch 1 was acknowledged");
    }

    #[test]
    fn newer_poll_replaces_parked_one_unless_lower_priority() {
        let now = Instant::now();
        let mut ch = Channel::new("/e".into(), Duration::from_secs(180), now);
        let PollStep::Wait { waiter: first, .. } = ch.poll(1, 0, now) else { panic!() };
        let PollStep::Wait { waiter: second, .. } = ch.poll(1, 0, now) else { panic!() };
        assert!(matches!(ch.finish_wait(first, false, now), Some(PollStep::Replaced)));
        assert!(matches!(ch.poll(1, -1, now), PollStep::Replaced));
        let empty = body(ch.finish_wait(second, true, now).unwrap());
        assert_eq!(empty["sender"], json!([]), "an empty batch has an empty sender list");
        assert_eq!(empty["_links"]["next"]["href"], "/e?ack=2");
    }
}
