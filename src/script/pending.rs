//! A run's trace until it is written (`Pending`): the script's runner keeps the last ones in
//! a ring, a burst's commits hold them in the script's `Watch`, and a commit (or the host,
//! for a script stuck in a call) makes them whole and writes them.

use super::trace::{self, Trace};
use crate::ucwa::Event;
use std::sync::Arc;
use std::time::Instant;

/// A run's trace until it is written: what only a trace kept needs (the event's and the
/// subscriptions' texts, the names) is made then, from the batch and the subscriptions'
/// description, both shared. Nothing in it refers to the Lua state, so a burst's commits can
/// hold it in the script's `Watch` as it is, for the next commit or the host to write (a Lua
/// value dropped by the host would wait for the state, which a stuck call holds).
pub(super) enum Pending {
    /// A run of its own: a call at a time (`run_event`), a timer, `on_unload`, a paused event.
    /// (Boxed: a `Pending` is two words, what the ring and the watch move around.)
    One(Box<OneRun>),
    /// The trace at this index of the traces of a run of events through `dispatch`, which
    /// share one allocation: in a burst most traces are let go before they are written, and
    /// one pointer per trace is what goes through the ring of the last ones and the watch.
    InRun(Arc<RunTraces>, usize),
}

/// The trace of a run of its own, with the event and subscriptions it is about.
pub(super) struct OneRun {
    pub trace: Trace,
    pub event: Option<(Arc<Vec<Event>>, usize)>,
    pub subs: Option<Arc<Vec<trace::Subscribed>>>,
    /// When the run happened (`at_ms`, made at the commit).
    pub at: Option<Instant>,
}

/// The traces of one run of events through `dispatch`, in order, with each one's index in
/// the batch.
pub(super) struct RunTraces {
    pub batch: Arc<Vec<Event>>,
    pub subs: Arc<Vec<trace::Subscribed>>,
    pub traces: Vec<(Trace, usize)>,
    /// When the run ended (the date of a trace without a call: no handler matched its type).
    pub ended: Instant,
}

impl Pending {
    pub(super) fn of(trace: Trace) -> Pending {
        Pending::One(Box::new(OneRun { trace, event: None, subs: None, at: None }))
    }

    /// The trace whole.
    fn made(self, account: &str, script: &str, wall: &trace::WallClock) -> Trace {
        let (mut t, event, subs, at) = match self {
            Pending::One(one) => {
                let OneRun { trace, event, subs, at } = *one;
                (trace, event, subs, at)
            }
            Pending::InRun(run, k) => {
                let (t, i) = &run.traces[k];
                let at = t.calls.first().and_then(|c| c.started).unwrap_or(run.ended);
                (t.clone(), Some((run.batch.clone(), *i)), Some(run.subs.clone()), Some(at))
            }
        };
        t.account = account.to_string();
        t.script = script.to_string();
        if let Some(at) = at {
            t.at_ms = wall.ms(at);
        }
        for c in &mut t.calls {
            if let Some(started) = c.started {
                c.start_ms = wall.ms(started);
            }
        }
        if let Some((batch, i)) = event {
            let ev = &batch[i];
            t.event = Some(trace::TracedEvent::of(ev));
            if let Some(subs) = subs {
                t.subscriptions = subs.iter().map(|s| s.made_of(ev.rel(), ev.kind())).collect();
            }
        }
        t
    }
}

/// `pending` made whole, for `account`'s `script` (one reading of the clocks for all).
pub(super) fn made(pending: impl IntoIterator<Item = Pending>, account: &str, script: &str) -> impl Iterator<Item = Trace> {
    let wall = trace::WallClock::now();
    let (account, script) = (account.to_string(), script.to_string());
    pending.into_iter().map(move |p| p.made(&account, &script, &wall))
}
