//! Audio/video calls: each call is a task that walks the documented event sequence
//! (PROTOCOL.md §5) and keeps the call's resources GET-able while it lasts.
//!
//! Incoming: conversation added + audioVideoInvitation started + audioVideo updated (Connecting);
//! answered: invitation completed (Success) + audioVideoSession added (Establishing) + audioVideo
//! updated (Connected) + conversation updated; then audioVideoSession updated (Established);
//! hang-up: audioVideoSession deleted + audioVideo updated (Disconnected) + conversation deleted.
//! Not answered: invitation completed (Failure, reason subcode Missed/Declined/Canceled) +
//! audioVideo updated (Disconnected) + conversation deleted, and no session at all.

use super::channel::SimEvent;
use super::model::{CallCommand, CallOutcome, CallRecord, CallSpec, Direction, Phase, WAIT_FOR_ACCEPT_MAX};
use super::paths::{self, app_path};
use super::reply;
use super::resources;
use super::shared::Shared;
use super::state::{Counters, SimState};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{sleep, Duration};

/// Starts a call on an available application; returns the call id, or why it cannot ring.
pub(crate) fn start_call(shared: &Arc<Shared>, spec: CallSpec, app_id: Option<u64>) -> Result<u64, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let call_id = {
        let mut st = shared.lock();
        let app_id = match app_id.or_else(|| st.ringing_target(spec.user.as_deref())) {
            Some(id) => id,
            None => return Err("no application has called makeMeAvailable for that user".into()),
        };
        let local_user = st.apps.get(&app_id).map(|a| a.user.clone()).ok_or("no such application")?;
        if spec.direction == Direction::Incoming {
            if let Some(f) = st.profiles.get(&local_user).map(|p| &p.forwarding).filter(|f| f.setting == "ImmediateForward") {
                Counters::bump(&shared.counters.calls_forwarded);
                let why = format!("{local_user} forwards every call to {}: the call does not ring here", f.target);
                let (target, id) = (f.target.clone(), st.next_id());
                let remote = spec.remote.clone().unwrap_or_else(|| format!("sip:caller{}@fabrikam.com", id % 1000));
                let record = json!({"id": id, "application": app_id, "direction": "Incoming", "remote": remote, "phase": "Ended",
                    "conversation": null, "invitation": null, "answered_on": null, "forwarded_to": target, "outcome": "forwarded"});
                remember_ended(&mut st, record);
                return Err(why);
            }
        }
        let id = st.next_id();
        let n = id % 1000;
        let remote_uri = spec.remote.clone().unwrap_or_else(|| format!("sip:caller{n}@fabrikam.com"));
        let remote_name = spec.name.clone().unwrap_or_else(|| paths::display_name(remote_uri.trim_start_matches("sip:")));
        let call = CallRecord {
            id,
            app_id,
            invitation_id: format!("{:032x}", (id as u128) * 0x9e37_79b9_7f4a_7c15),
            direction: spec.direction,
            remote_uri,
            remote_name,
            local_uri: format!("sip:{local_user}"),
            subject: spec.subject.clone().unwrap_or_else(|| "Call".to_string()),
            thread_id: format!("{:032x}", (id as u128) * 0x2545_f491_4f6c_dd1d),
            operation_id: spec.operation_id.clone().unwrap_or_else(|| format!("{:032x}", id as u128 * 31)),
            session_context: format!("{:032x}", id as u128 * 17),
            answered_on: None,
            created_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            phase: Phase::Ringing,
            answered: false,
            session_state: "Establishing",
            commands: tx,
        };
        let events = ring_events(&call);
        st.calls.insert(id, call);
        st.push(app_id, events);
        id
    };
    Counters::bump(&shared.counters.calls_started);
    let ring = match (spec.ring_ms, spec.outcome) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, CallOutcome::WaitForAccept) => WAIT_FOR_ACCEPT_MAX,
        (None, _) => shared.config.ring_time,
    };
    let duration = spec.duration_ms.map(Duration::from_millis);
    tokio::spawn(drive(shared.clone(), call_id, spec.outcome, ring, duration, rx));
    Ok(call_id)
}

/// Walks one call through its life.
async fn drive(
    shared: Arc<Shared>,
    id: u64,
    outcome: CallOutcome,
    ring: Duration,
    duration: Option<Duration>,
    mut commands: mpsc::UnboundedReceiver<CallCommand>,
) {
    let answered = tokio::select! {
        _ = sleep(ring) => match outcome {
            CallOutcome::Answered => true,
            CallOutcome::Missed | CallOutcome::WaitForAccept => { unanswered(&shared, id, "Missed"); return; }
        },
        cmd = commands.recv() => match cmd {
            Some(CallCommand::Accept) => true,
            Some(CallCommand::Decline) => { unanswered(&shared, id, "Declined"); return; }
            Some(CallCommand::End) | None => { unanswered(&shared, id, "Canceled"); return; }
        },
    };
    if !answered || !step(&shared, id, answer_events) {
        return;
    }
    // The media session settles shortly after it is added.
    let hangup = async {
        tokio::select! {
            _ = sleep(Duration::from_millis(150)) => {
                step(&shared, id, established_events);
            }
            cmd = commands.recv() => if matches!(cmd, Some(CallCommand::End) | None) { return; },
        }
        loop {
            tokio::select! {
                _ = sleep(duration.unwrap_or(Duration::MAX / 4)) => return,
                cmd = commands.recv() => match cmd {
                    Some(CallCommand::End) | None => return,
                    Some(_) => continue, // accept/decline after answer: nothing to do
                },
            }
        }
    };
    hangup.await;
    finish(&shared, id, "answered", hangup_events);
}

/// Applies a step to a live call and queues its events; false if the call is gone.
fn step(shared: &Shared, id: u64, f: fn(&mut CallRecord) -> Vec<SimEvent>) -> bool {
    let mut st = shared.lock();
    let Some(call) = st.calls.get_mut(&id) else {
        return false;
    };
    let app = call.app_id;
    let events = f(call);
    st.push(app, events);
    true
}

/// How many ended calls the control API keeps listing.
pub(crate) const KEEP_ENDED: usize = 1000;

/// Ends a call: its final events are queued, its resources stop being GET-able, and the control
/// API lists it as ended with its `outcome`.
fn finish(shared: &Shared, id: u64, outcome: &str, f: impl FnOnce(&mut CallRecord) -> Vec<SimEvent>) {
    let mut st = shared.lock();
    let Some(mut call) = st.calls.remove(&id) else {
        return;
    };
    call.phase = Phase::Ended;
    let events = f(&mut call);
    st.push(call.app_id, events);
    let record = json!({"id": call.id, "application": call.app_id, "direction": call.direction.as_str(), "remote": call.remote_uri,
        "phase": "Ended", "conversation": paths::conversation_path(&call), "invitation": paths::invitation_path(&call),
        "answered_on": call.answered_on, "outcome": outcome});
    remember_ended(&mut st, record);
    Counters::bump(&shared.counters.calls_ended);
}

fn remember_ended(st: &mut SimState, record: Value) {
    if st.ended_calls.len() >= KEEP_ENDED {
        st.ended_calls.pop_front();
    }
    st.ended_calls.push_back(record);
}

fn unanswered(shared: &Shared, id: u64, subcode: &'static str) {
    let outcome = match subcode {
        "Declined" => "declined",
        "Canceled" => "cancelled",
        _ => "missed",
    };
    finish(shared, id, outcome, |call| unanswered_events(call, subcode));
}

fn comm(call: &CallRecord) -> String {
    format!("{}/communication", app_path(call.app_id))
}

fn event(rel: &str, href: String, kind: &str, embedded: Option<Value>) -> Value {
    let mut e = json!({"link": {"rel": rel, "href": href}, "type": kind});
    if let Some(resource) = embedded {
        e["_embedded"] = json!({ rel: resource });
    }
    e
}

fn from_communication(call: &CallRecord, event: Value) -> SimEvent {
    SimEvent { sender_rel: "communication", sender_href: comm(call), event }
}

fn from_conversation(call: &CallRecord, event: Value) -> SimEvent {
    SimEvent { sender_rel: "conversation", sender_href: paths::conversation_path(call), event }
}

fn conversation_event(call: &CallRecord, kind: &str, embed: bool) -> SimEvent {
    let mut e = event("conversation", paths::conversation_path(call), kind, embed.then(|| resources::conversation(call)));
    e["link"]["title"] = json!(call.remote_name);
    from_communication(call, e)
}

fn audio_video_updated(call: &CallRecord) -> SimEvent {
    from_conversation(call, event("audioVideo", paths::audio_video_path(call), "updated", Some(resources::audio_video(call))))
}

fn invitation_event(call: &CallRecord, kind: &str) -> Value {
    event("audioVideoInvitation", paths::invitation_path(call), kind, Some(resources::invitation(call)))
}

fn ring_events(call: &CallRecord) -> Vec<SimEvent> {
    vec![conversation_event(call, "added", true), from_communication(call, invitation_event(call, "started")), audio_video_updated(call)]
}

fn answer_events(call: &mut CallRecord) -> Vec<SimEvent> {
    call.phase = Phase::Connected;
    call.answered = true;
    let mut completed = invitation_event(call, "completed");
    completed["status"] = json!("Success");
    vec![
        from_communication(call, completed),
        from_communication(call, event("audioVideoSession", paths::session_path(call), "added", Some(resources::session(call)))),
        audio_video_updated(call),
        conversation_event(call, "updated", true),
    ]
}

fn established_events(call: &mut CallRecord) -> Vec<SimEvent> {
    call.session_state = "Established";
    vec![from_communication(call, event("audioVideoSession", paths::session_path(call), "updated", Some(resources::session(call))))]
}

fn hangup_events(call: &mut CallRecord) -> Vec<SimEvent> {
    vec![
        from_communication(call, event("audioVideoSession", paths::session_path(call), "deleted", None)),
        audio_video_updated(call),
        conversation_event(call, "deleted", false),
    ]
}

fn unanswered_events(call: &mut CallRecord, subcode: &str) -> Vec<SimEvent> {
    let (code, message) = match subcode {
        "Declined" => ("Forbidden", "The call was declined."),
        "Canceled" => ("Gone", "The caller hung up before the call was answered."),
        _ => ("Gone", "The call was not answered."),
    };
    let mut completed = invitation_event(call, "completed");
    completed["status"] = json!("Failure");
    completed["reason"] = reply::error(code, Some(subcode), message);
    vec![from_communication(call, completed), audio_video_updated(call), conversation_event(call, "deleted", false)]
}
