//! A batch of events goes through a script's handlers in one entry into Lua: what a user sees
//! is what one call per handler gave. Each handler call keeps its own error (with
//! its traceback), limits and log fields; the handlers of an event share its table; a timer a
//! handler sets, and a subscription it makes, take effect before the batch's next event.

mod common;

use common::{events, expect, silent_server, write, PATIENCE};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::broadcast;
use ucwa_agent::script::{Limits, ScriptEnv, ScriptHost, ScriptOutput, ScriptSettings};
use ucwa_agent::store::Store;

async fn host(settings: ScriptSettings, script: &str) -> (ScriptHost, broadcast::Receiver<ScriptOutput>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.lua", script);
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(settings, Arc::new(Store::in_memory())));
    let out = host.subscribe();
    host.load_dir().await.unwrap();
    (host, out, dir)
}

/// What the script logged and the errors it raised, in order, until `n` of them.
async fn outputs(out: &mut broadcast::Receiver<ScriptOutput>, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let o = expect(out, &format!("output {} of the script", seen.len() + 1), |o| {
            matches!(o, ScriptOutput::Log { .. } | ScriptOutput::HandlerError { .. } | ScriptOutput::Paused { .. })
        })
        .await;
        seen.push(match o {
            ScriptOutput::Log { message, .. } => message,
            ScriptOutput::HandlerError { seq, error, .. } => format!("error at {seq}: {error}"),
            ScriptOutput::Paused { failures, .. } => format!("paused after {failures}"),
            _ => unreachable!(),
        });
    }
    seen
}

/// The agent's log lines (the `tracing` output), for their fields.
fn log_lines() -> &'static Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let writer = move || Sink(sink.clone());
        tracing_subscriber::fmt().with_env_filter("info").with_ansi(false).with_writer(writer).init();
        lines
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_handler_costs_only_its_own_call_and_the_next_handler_gets_the_same_table() {
    let lines = log_lines();
    let script = r#"
agent.on("audioVideoSession", function(e)
  e.mark = "first " .. e.seq
  if e.seq == 2 then error("boom at " .. e.seq) end
end)
agent.on("audioVideoSession", function(e) agent.log.info((e.mark or "no mark") .. ", then second " .. e.seq) end)
"#;
    let (host, mut out, _dir) = host(ScriptSettings::new(Limits::default()), script).await;
    host.dispatch(events(1, 3));
    let seen = outputs(&mut out, 4).await;
    assert_eq!(seen[0], "first 1, then second 1");
    assert!(seen[1].starts_with("error at 2: s.lua:4: boom at 2\nstack traceback:\n"), "{}", seen[1]);
    // The handler's frame reads as it did for a call of its own.
    assert!(seen[1].contains("\n\ts.lua:4: in function <s.lua:2>"), "{}", seen[1]);
    assert_eq!(seen[2..], ["first 2, then second 2", "first 3, then second 3"]);
    // A log line names the event its handler runs for.
    host.barrier().await;
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let line = text.lines().find(|l| l.contains("first 3, then second 3")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("rel=\"audioVideoSession\"") || line.contains("rel=audioVideoSession"), "{line}");
    assert!(line.contains("seq=3"), "{line}");
}

#[tokio::test]
async fn a_handler_past_its_time_limit_is_stopped_and_the_events_after_it_run() {
    let port = silent_server().await;
    let script = format!(
        r#"
agent.on("audioVideoSession", function(e)
  if e.seq == 2 then agent.http.request{{url = "http://127.0.0.1:{port}/"}} end
  agent.log.info("first " .. e.seq)
end)
agent.on("audioVideoSession", function(e) agent.log.info("second " .. e.seq) end)
"#
    );
    let limits = Limits { handler_timeout: Duration::from_millis(300), ..Limits::default() };
    let settings = ScriptSettings { http_allow: vec![format!("127.0.0.1:{port}")], ..ScriptSettings::new(limits) };
    let (host, mut out, _dir) = host(settings, &script).await;
    host.dispatch(events(1, 3));
    let seen = outputs(&mut out, 6).await;
    assert_eq!(seen[..2], ["first 1", "second 1"]);
    // Whichever fires first, the handler's time limit or the request's (it defaults to the same).
    assert!(seen[2].starts_with("error at 2: ") && (seen[2].contains("time limit exceeded") || seen[2].contains("timed out")), "{}", seen[2]);
    assert_eq!(seen[3..], ["second 2", "first 3", "second 3"]);
}

#[tokio::test]
async fn a_timer_or_a_subscription_a_handler_makes_takes_effect_before_the_next_event() {
    let script = r#"
agent.on("audioVideoSession", function(e)
  if e.seq == 1 then agent.after(0, function() agent.log.info("timer") end) end
  if e.seq == 2 then agent.on("audioVideoSession", function(e) agent.log.info("late " .. e.seq) end) end
  agent.log.info("saw " .. e.seq)
end)
"#;
    let (host, mut out, _dir) = host(ScriptSettings::new(Limits::default()), script).await;
    host.dispatch(events(1, 3));
    assert_eq!(outputs(&mut out, 5).await, ["saw 1", "timer", "saw 2", "saw 3", "late 3"]);
}

#[tokio::test]
async fn a_script_that_keeps_failing_pauses_within_a_batch() {
    let script = r#"agent.on("audioVideoSession", function(e) agent.log.info("saw " .. e.seq) error("no") end)"#;
    let settings = ScriptSettings { max_consecutive_failures: 2, ..ScriptSettings::new(Limits::default()) };
    let (host, mut out, _dir) = host(settings, script).await;
    host.dispatch(events(1, 4));
    let seen = outputs(&mut out, 5).await;
    assert_eq!([&seen[0], &seen[2], &seen[4]], ["saw 1", "saw 2", "paused after 2"]);
    assert!(seen[1].starts_with("error at 1: s.lua:1: no") && seen[3].starts_with("error at 2: s.lua:1: no"), "{seen:?}");
    // The events after the pause are not run (nothing more comes before the barrier).
    host.barrier().await;
    let more: Vec<_> =
        std::iter::from_fn(|| out.try_recv().ok()).filter(|o| matches!(o, ScriptOutput::Log { .. } | ScriptOutput::HandlerError { .. })).collect();
    assert!(more.is_empty(), "{more:?}");
}

#[tokio::test]
async fn with_traces_on_each_handler_call_of_a_batch_is_traced_with_its_outcome() {
    let script = r#"
agent.on("audioVideoSession", function(e)
  if e.seq == 2 then error("boom") end
end)
agent.on("audioVideoSession", function(e) agent.log.info("second " .. e.seq) end)
"#;
    let settings = ScriptSettings { traces_per_script: 10, ..ScriptSettings::new(Limits::default()) };
    let (host, _out, _dir) = host(settings, script).await;
    // (While a tap listens, every trace is also sent on the output stream as it is committed.)
    let (mut tap, _guard) = host.tap();
    host.dispatch(events(1, 3));
    let mut traces = Vec::new();
    while traces.len() < 3 {
        if let ScriptOutput::Trace { json, .. } = expect(&mut tap, "a trace", |o| matches!(o, ScriptOutput::Trace { .. })).await {
            traces.push(serde_json::from_str::<serde_json::Value>(&json).unwrap());
        }
    }
    let calls = |t: &serde_json::Value| -> Vec<(u64, String, String)> {
        t["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["sub"].as_u64().unwrap(), c["outcome"].as_str().unwrap().to_string(), c["at"].as_str().unwrap_or("").to_string()))
            .collect()
    };
    let seqs: Vec<u64> = traces.iter().map(|t| t["event"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(calls(&traces[0]), [(0, "ok".into(), "".into()), (1, "ok".into(), "".into())]);
    assert_eq!(calls(&traces[1]), [(0, "error".into(), "s.lua:3".into()), (1, "ok".into(), "".into())]);
    assert!(traces[1]["calls"][0]["error"].as_str().unwrap().starts_with("s.lua:3: boom"), "{}", traces[1]);
    // What the second handler did (its log line) is in its call's steps.
    assert_eq!(traces[2]["calls"][1]["steps"].as_array().map(Vec::len), Some(1), "{}", traces[2]);
}

/// A traced script (`s`, 5 traces kept) fed a burst of 15,000 events of some work each; the
/// last event's seq.
async fn traced_burst() -> (ScriptHost, Arc<Store>, tempfile::TempDir, u64) {
    let script = "agent.on('audioVideoSession', function(e) local x = 0 for i = 1, 3000 do x = x + i end end)\n";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.lua", script);
    let store = Arc::new(Store::in_memory());
    let settings = ScriptSettings { traces_per_script: 5, ..ScriptSettings::new(Limits::default()) };
    let host = ScriptHost::with_env(dir.path().to_path_buf(), ScriptEnv::new(settings, store.clone()));
    host.load_dir().await.unwrap();
    let (batches, per_batch) = (150u64, 100u64);
    for b in 0..batches {
        host.dispatch(events(b * per_batch + 1, per_batch));
    }
    (host, store, dir, batches * per_batch)
}

/// The event seq of script `s`'s newest stored trace.
fn newest_trace(store: &Store) -> Option<u64> {
    let q = ucwa_agent::store::TraceQuery { script: Some("s".into()), limit: 1, ..Default::default() };
    store.traces(&q).unwrap().last().map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["event"]["seq"].as_u64().unwrap())
}

#[tokio::test]
async fn a_bursts_traces_are_written_while_it_runs_and_its_last_ones_once_it_is_done() {
    // In a burst the traces are written every 100 ms, not at every 10 ms commit; they must
    // still move on while the burst runs, and its last event's trace must not wait for
    // another event once the script is done.
    let (host, store, _dir, last) = traced_burst().await;
    let newest_trace = || newest_trace(&store);
    let mut seen_while_busy = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        assert!(std::time::Instant::now() < deadline, "the burst did not end: cursor {:?}", store.cursor("s").unwrap());
        let cursor = store.cursor("s").unwrap().unwrap_or(0);
        let newest = newest_trace();
        if cursor >= last {
            break;
        }
        seen_while_busy.extend(newest);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen_while_busy.len() >= 2, "the stored traces moved on during the burst: {seen_while_busy:?}");
    let deadline = std::time::Instant::now() + PATIENCE;
    while newest_trace() != Some(last) {
        assert!(std::time::Instant::now() < deadline, "the last event's trace was not written: newest {:?}", newest_trace());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    host.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn once_shutdown_gives_up_on_a_busy_script_every_event_its_cursor_passes_has_its_trace() {
    // A shutdown whose grace ends with a script still in a burst leaves its thread running
    // until the process exits; every cursor it commits from then on may be its last, so the
    // traces of the events it passes must be in the database with it (not held for 100 ms).
    let (host, store, _dir, last) = traced_burst().await;
    let newest_trace = || newest_trace(&store).unwrap_or(0);
    // Under way: traces written once, so the burst's commits now hold theirs back.
    let deadline = std::time::Instant::now() + PATIENCE;
    while newest_trace() == 0 {
        assert!(std::time::Instant::now() < deadline, "the burst did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(host.shutdown(Duration::from_millis(50)).await, ["s"], "the grace ended with the script busy");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        assert!(std::time::Instant::now() < deadline, "the burst did not end: cursor {:?}", store.cursor("s").unwrap());
        let cursor = store.cursor("s").unwrap().unwrap_or(0);
        let newest = newest_trace();
        assert!(newest >= cursor, "the cursor passed event {cursor}, yet the newest trace is of event {newest}: a process exit now loses the traces between");
        if cursor >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
