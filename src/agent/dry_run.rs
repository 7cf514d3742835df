//! A dry run: one journaled event through an account's scripts as their files are now, with
//! the replay machinery (`offline_env`, `script::offline`): nothing is sent, every request is
//! reported as what the script would send, `agent.ucwa.get` answers the event's own resource
//! (or the application; else 404), secrets are placeholders. Each script starts from its
//! `agent.state` as committed; nothing it changes is kept. The console's "run it again".

use crate::script::offline_env::{offline_env, Offline, OFFLINE_APPLICATION};
use crate::script::{Clock, Net, ScriptHost, ScriptOutput, ScriptSettings};
use crate::store::StateWrite;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What one script did in the dry run.
#[derive(Debug, Default, Serialize)]
pub struct DryRunScript {
    pub script: String,
    pub version: Option<u64>,
    /// `ucwa GET https://…` (with the body, if any), in order.
    pub would_send: Vec<String>,
    /// `info: message`, in order.
    pub logs: Vec<String>,
    /// Load and handler errors (first line and traceback).
    pub errors: Vec<String>,
}

/// How long the scripts may take to finish the event (their own limits stop a handler sooner).
const GRACE: Duration = Duration::from_secs(10);

/// Runs event `seq` of `live`'s journal through `live`'s scripts as their files are now.
/// Err: the event is no longer in the journal (pruned), or the journal cannot be read.
pub async fn dry_run(live: &ScriptHost, seq: u64) -> Result<Vec<DryRunScript>, String> {
    let store = &live.env().store;
    let event = store.event_at(seq).map_err(|e| format!("cannot read the journal: {e}"))?.ok_or_else(|| {
        format!("event #{seq} is no longer in the journal (it keeps the events a script has not finished, and drops the rest every few dozen batches)")
    })?;
    let origin = url::Url::parse(event.href()).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let application = live.env().application.get().map(|a| a.strip_prefix(origin.as_str()).unwrap_or(&a).to_string());
    let application = application.unwrap_or_else(|| OFFLINE_APPLICATION.to_string());
    let missing = "Not in the event (a dry run sends nothing and asks the pool nothing).";
    let mut env = offline_env((*live.env().settings()).clone(), true, true, Offline { origin: &origin, application: &application, missing });
    env.secret_placeholders = true;
    // Inside the live agent: its lines are limited as the live run's are (its response holds them).
    env.set_settings(ScriptSettings { log_rate: live.env().settings().log_rate, ..(*env.settings()).clone() });
    // Its scripts' log lines say they come from a dry run (not from the account's live run).
    env.span = tracing::info_span!("dry_run", seq);
    env.clock = Clock::manual(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64));
    if let Net::Offline(net) = &env.net {
        net.learn(event.href(), event.resource(), event.kind() == "deleted");
    }
    // Each script's state as committed: the run sees what the live one would.
    for status in live.statuses() {
        let keys = store.state(&status.name).unwrap_or_default();
        let write = StateWrite { replace_all: true, set: &keys, removed: &[] };
        if let Err(error) = env.store.commit_script(&status.name, None, Some(&write)) {
            tracing::warn!(script = %status.name, %error, "dry run: the script's state could not be copied; it starts empty");
        }
    }
    let live_versions: BTreeMap<String, Option<u64>> = live.statuses().into_iter().map(|s| (s.name, s.version)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    env.collect = Some(tx);
    let host = ScriptHost::with_dirs(live.dirs().to_vec(), env);
    let mut by_script: BTreeMap<String, DryRunScript> = BTreeMap::new();
    if let Err(error) = host.load_dir().await {
        return Err(format!("cannot read the scripts directory: {error}"));
    }
    host.dispatch(vec![event]);
    host.barrier().await;
    for name in host.shutdown(GRACE).await {
        entry(&mut by_script, &name).errors.push(format!("did not finish the event within {} s", GRACE.as_secs()));
    }
    drop(host);
    rx.close();
    while let Ok(o) = rx.try_recv() {
        match o {
            // (Numbered as the live version it stands for, when the file has one.)
            ScriptOutput::Loaded { script, version } => {
                let live = live_versions.get(&script).copied().flatten();
                entry(&mut by_script, &script).version = live.or(Some(version));
            }
            ScriptOutput::LoadFailed { script, error } => entry(&mut by_script, &script).errors.push(format!("not loaded: {error}")),
            ScriptOutput::Request { script, via, method, url, body } => {
                let body = body.map(|b| format!(" {b}")).unwrap_or_default();
                entry(&mut by_script, &script).would_send.push(format!("{via} {method} {url}{body}"));
            }
            ScriptOutput::Log { script, level, message, .. } => entry(&mut by_script, &script).logs.push(format!("{level}: {message}")),
            ScriptOutput::HandlerError { script, error, .. } => entry(&mut by_script, &script).errors.push(error),
            ScriptOutput::Stuck { script, doing, limit_ms } => {
                entry(&mut by_script, &script).errors.push(format!("stuck: {doing} ran past its {limit_ms} ms limit"));
            }
            _ => {}
        }
    }
    Ok(by_script.into_values().collect())
}

fn entry<'a>(m: &'a mut BTreeMap<String, DryRunScript>, script: &str) -> &'a mut DryRunScript {
    m.entry(script.to_string()).or_insert_with(|| DryRunScript { script: script.to_string(), ..Default::default() })
}
