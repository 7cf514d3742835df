//! The task that owns one script's Lua state: it takes the script's messages in order, so events
//! run one at a time and a reload swaps versions between two events.

use super::host::ScriptOutput;
use super::interop;
use super::loader::{describe, Loaded};
use super::sandbox::{self, Limits};
use crate::ucwa::Event;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc};

/// What a script's task is asked to do, in order.
pub(crate) enum Msg {
    Event(Arc<Event>),
    /// A new version, already built and run to completion of its top level.
    Swap(Box<Loaded>),
    Stop,
}

pub(crate) async fn run(
    mut current: Loaded,
    mut inbox: mpsc::UnboundedReceiver<Msg>,
    limits: Limits,
    output: broadcast::Sender<ScriptOutput>,
) {
    while let Some(msg) = inbox.recv().await {
        match msg {
            Msg::Event(ev) => handle(&current, &ev, &limits, &output).await,
            Msg::Swap(next) => {
                // The old version's state (subscriptions, closures) is freed here.
                current = *next;
            }
            Msg::Stop => break,
        }
    }
}

/// Runs every handler of the script that matches the event, in registration order.
async fn handle(cur: &Loaded, ev: &Arc<Event>, limits: &Limits, output: &broadcast::Sender<ScriptOutput>) {
    let subs = cur.subscriptions().map(|s| s.matching(&ev.rel, &ev.kind)).unwrap_or_default();
    if subs.is_empty() {
        return;
    }
    let script = &*cur.ctx.name;
    let table = match interop::event_table(&cur.lua, ev) {
        Ok(t) => t,
        Err(e) => {
            report(output, cur, ev, format!("cannot build the event table: {}", describe(&e)));
            return;
        }
    };
    for sub in subs {
        if let Some(b) = sandbox::budget(&cur.lua) {
            b.arm(limits);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(limits.handler_timeout, sub.func.call_async::<()>(table.clone())).await;
        let duration_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(Ok(())) => {
                tracing::trace!(script, rel = %ev.rel, r#type = %ev.kind, seq = ev.seq, duration_us, "handler returned");
            }
            Ok(Err(e)) => report(output, cur, ev, describe(&e)),
            Err(_) => report(
                output,
                cur,
                ev,
                format!("time limit exceeded (scripts.handler_timeout_ms = {})", limits.handler_timeout.as_millis()),
            ),
        }
    }
}

/// A failed handler: one log line naming the script, the event and the error; the next event proceeds.
fn report(output: &broadcast::Sender<ScriptOutput>, cur: &Loaded, ev: &Event, error: String) {
    let script = &*cur.ctx.name;
    let (first, traceback) = error.split_once('\n').unwrap_or((&error, ""));
    tracing::error!(
        script,
        version = cur.ctx.version,
        rel = %ev.rel,
        r#type = %ev.kind,
        seq = ev.seq,
        traceback,
        "handler failed: {first}"
    );
    let _ = output.send(ScriptOutput::HandlerError {
        script: script.to_string(),
        rel: ev.rel.clone(),
        kind: ev.kind.clone(),
        seq: ev.seq,
        error,
    });
}
