//! What operators see: counters, gauges and histograms rendered in the Prometheus text format
//! at `/metrics`, and the agent's health at `/healthz` (`[metrics] listen`).
//!
//! The parts of the agent that observe something (channel loop, sink, runners, host, session)
//! record it here next to the log line they write.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most versions of one script kept stuck at once in a call that does not return (a
/// handler's, a timer's or the top level's): each holds its thread, its Lua state and a core
/// until the call returns, which no limit can force. While this many are stuck, a new version
/// of the script is not started: it waits, said in the log and `/healthz`, and starts as soon as
/// one of them returns. Two, so that the first fix saved after a script got stuck starts at once.
/// The script host keeps this bound (`script::MAX_STUCK_VERSIONS`); it is defined here, below
/// the host, because `/healthz`'s warning states it.
pub const MAX_STUCK_VERSIONS: usize = 2;

/// A script's handler calls, counted by its runner without a lock and added to `Metrics` at
/// the end of each batch, at each commit and after a failed call (`Metrics::handlers`): two
/// locks and a map lookup per call were a visible share of a trivial handler's cost
/// (BENCHMARKS.md).
#[derive(Default)]
pub struct HandlerTally {
    errors: u64,
    limit_stops: u64,
    duration: Histogram,
    delivery: Histogram,
}

impl HandlerTally {
    /// One call, as `Metrics::handler` takes it.
    pub fn add(&mut self, took: Duration, failed: bool, limit: bool, waited: Option<Duration>) {
        self.errors += failed as u64;
        self.limit_stops += limit as u64;
        self.duration.observe(took);
        if let Some(w) = waited {
            self.delivery.observe(w);
        }
    }
}

/// Histogram bucket bounds, in seconds: 10 µs to 10 s (finer around the 1 ms latency target).
const BUCKETS: [f64; 18] = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    /// Per bucket, the observations above the bound before it (not cumulative: an observation
    /// is one increment, where cumulative counts took one per bucket over it, twice per handler
    /// call); `render` and `quantile` add them up.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Adds `other`'s observations.
    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
    }

    /// Each bucket's bound and its cumulative count (what `le` means).
    fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BUCKETS
            .iter()
            .zip(self.counts.iter().scan(0, |sum, n| {
                *sum += n;
                Some(*sum)
            }))
            .map(|(b, n)| (*b, n))
    }

    /// The bucket bound (s) at or under which the `q` quantile lies (None: no observation, or
    /// over the last bound).
    fn quantile(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        self.cumulative().find(|(_, n)| *n >= rank).map(|(b, _)| b).filter(|_| self.count > 0)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, n) in self.cumulative() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Turns a pool-chosen rel or type into its metric label value.
pub type Fold = fn(&str) -> &'static str;

/// A per-script family: name, type, help, and how to read its value.
type PerScript = (&'static str, &'static str, &'static str, fn(&ScriptFigures) -> u64);

/// What a script did, per script.
#[derive(Default, Clone)]
struct ScriptFigures {
    handler_calls: u64,
    handler_errors: u64,
    limit_stops: u64,
    reloads_ok: u64,
    reloads_failed: u64,
    /// 1 while the watchdog holds the script stuck.
    stuck: u64,
    /// Versions of the script stuck in a call (a handler's or the top level's) whose thread
    /// has not ended yet.
    stuck_versions: u64,
    /// 1 while a new version waits for one of those threads to end.
    waiting: u64,
    /// Bytes of `agent.state` JSON written to the database.
    state_bytes_written: u64,
    lua_memory_bytes: u64,
    duration: Histogram,
}

/// Why the agent is or is not polling, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Starting,
    SigningIn,
    Polling,
    Recovering,
    Stopping,
    /// Ended by itself (one account of several: its credentials refused); `last_error` says why.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while a script is stuck or a warning stands (the agent itself still polls).
    pub status: &'static str,
    pub state: HealthState,
    /// Scripts the watchdog declared stuck: they get no events until their file changes.
    pub stuck_scripts: Vec<String>,
    /// Per script, its versions stuck in a call that has not returned (each holds a thread, a
    /// Lua state and a core); scripts with none are left out.
    pub stuck_versions: BTreeMap<String, u64>,
    /// What works less than it should while the agent polls (e.g. not available for
    /// incoming calls), each with its reason.
    pub warnings: Vec<String>,
    /// Seconds in this state.
    pub for_secs: u64,
    /// The last error, while not polling.
    pub last_error: Option<String>,
}

/// An account's figures as the console shows them.
#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub polls: u64,
    pub sign_ins: u64,
    pub applications_created: u64,
    pub recoveries: u64,
    pub handler_errors: u64,
    pub last_poll_secs_ago: Option<u64>,
}

/// A script's figures as the console shows them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScriptSummary {
    pub handled: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub struct Metrics {
    started: Instant,
    polls: AtomicU64,
    /// When the last poll answered (ms after `started`; 0: none yet).
    last_poll_ms: AtomicU64,
    batches: AtomicU64,
    sign_ins: AtomicU64,
    /// By when the event-channel loop shows up again (ms after `started`): the end of the
    /// bounded wait it is parked in, or the moment it started working (it then has the
    /// watchdog's tolerance to finish). Written only when the loop does something.
    due_ms: AtomicU64,
    applications_created: AtomicU64,
    token_renewals: AtomicU64,
    /// rel → type → count (nested so a lookup needs no allocation).
    events: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    recoveries: Mutex<BTreeMap<&'static str, u64>>,
    scripts: Mutex<BTreeMap<String, ScriptFigures>>,
    delivery: Mutex<Histogram>,
    health: Mutex<(HealthState, Instant, Option<String>)>,
    warnings: Mutex<BTreeMap<&'static str, String>>,
    /// What scripts define with `agent.metrics`.
    pub script_defined: Mutex<crate::script_metrics::ScriptMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            polls: AtomicU64::new(0),
            last_poll_ms: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            sign_ins: AtomicU64::new(0),
            due_ms: AtomicU64::new(0),
            applications_created: AtomicU64::new(0),
            token_renewals: AtomicU64::new(0),
            events: Mutex::default(),
            recoveries: Mutex::default(),
            scripts: Mutex::default(),
            delivery: Mutex::default(),
            health: Mutex::new((HealthState::Starting, Instant::now(), None)),
            warnings: Mutex::new(BTreeMap::new()),
            script_defined: Mutex::new(Default::default()),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("health", &self.health()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A script's figures, allocating its name only the first time.
fn script_entry<'a>(m: &'a mut BTreeMap<String, ScriptFigures>, script: &str) -> &'a mut ScriptFigures {
    if !m.contains_key(script) {
        m.insert(script.to_string(), ScriptFigures::default());
    }
    m.get_mut(script).expect("inserted above")
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn poll(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.last_poll_ms.store(self.started.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// The account's figures for the console.
    pub fn account_summary(&self) -> AccountSummary {
        let last = self.last_poll_ms.load(Ordering::Relaxed);
        AccountSummary {
            polls: self.polls.load(Ordering::Relaxed),
            sign_ins: self.sign_ins.load(Ordering::Relaxed),
            applications_created: self.applications_created.load(Ordering::Relaxed),
            recoveries: lock(&self.recoveries).values().sum(),
            handler_errors: lock(&self.scripts).values().map(|f| f.handler_errors).sum(),
            last_poll_secs_ago: (last > 0).then(|| self.started.elapsed().saturating_sub(Duration::from_millis(last)).as_secs()),
        }
    }

    /// A script's figures for the console: calls, failures, the median and 99th percentile of
    /// its handlers' run time (the histogram's bucket bound, in ms).
    pub fn script_summary(&self, script: &str) -> ScriptSummary {
        let m = lock(&self.scripts);
        let Some(f) = m.get(script) else { return ScriptSummary::default() };
        let ms = |q| f.duration.quantile(q).map(|s| s * 1000.0);
        ScriptSummary { handled: f.handler_calls, errors: f.handler_errors, p50_ms: ms(0.5), p99_ms: ms(0.99) }
    }

    /// A batch was journaled and handed to the scripts.
    /// `label` turns a rel or a type the map does not hold yet into its label value (the
    /// caller's vocabulary folds unknown values into one): the map only ever holds label values,
    /// so the usual event finds its rel and type without being folded again.
    pub fn batch<'a>(&self, events: impl Iterator<Item = (&'a str, &'a str)>, label: (Fold, Fold)) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut m = lock(&self.events);
        for (rel, kind) in events {
            let by_kind = match m.get_mut(rel) {
                Some(k) => k,
                None => m.entry(label.0(rel).to_string()).or_default(),
            };
            match by_kind.get_mut(kind) {
                Some(n) => *n += 1,
                None => *by_kind.entry(label.1(kind).to_string()).or_default() += 1,
            }
        }
    }

    pub fn sign_in(&self) {
        self.sign_ins.fetch_add(1, Ordering::Relaxed);
    }

    /// The event-channel loop works (a reply came, a wait ended): it must park again, or
    /// finish, within the watchdog's tolerance.
    pub fn loop_busy(&self) {
        self.due_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The event-channel loop parks in a wait that ends by itself within `limit` (a request
    /// under a timeout, a backoff sleep): alive until then without waking to say so.
    pub fn loop_parked(&self, limit: Duration) {
        self.due_ms.store((self.started.elapsed() + limit).as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the event-channel loop is past the moment it was due to show up again (zero
    /// while it is parked in a bounded wait or has just worked).
    pub fn loop_overdue(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.due_ms.load(Ordering::Relaxed)))
    }

    /// An application was created or resumed (after sign-in, or after one was lost).
    pub fn application_created(&self) {
        self.applications_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn token_renewal(&self) {
        self.token_renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// A failure the agent recovered from (`resync`, `application_gone`, `server_error`, …).
    pub fn recovery(&self, kind: &'static str) {
        self.recoveries(kind, 1);
    }

    /// `n` recoveries of one kind at once (none: nothing changes).
    pub fn recoveries(&self, kind: &'static str, n: usize) {
        if n > 0 {
            *lock(&self.recoveries).entry(kind).or_default() += n as u64;
        }
    }

    /// A handler call: how long it ran, whether it failed, whether a limit stopped it, and
    /// how long after its event arrived it started. (The runner counts its calls in a
    /// `HandlerTally` and adds them with `handlers`.)
    pub fn handler(&self, script: &str, took: Duration, failed: bool, limit: bool, waited: Option<Duration>) {
        let mut t = HandlerTally::default();
        t.add(took, failed, limit, waited);
        self.handlers(script, &mut t);
    }

    /// Adds a script's handler calls counted since the last time (`HandlerTally`), and empties it.
    pub fn handlers(&self, script: &str, tally: &mut HandlerTally) {
        if tally.duration.count == 0 {
            return;
        }
        let t = std::mem::take(tally);
        {
            let mut m = lock(&self.scripts);
            let f = script_entry(&mut m, script);
            f.handler_calls += t.duration.count;
            f.handler_errors += t.errors;
            f.limit_stops += t.limit_stops;
            f.duration.merge(&t.duration);
        }
        if t.delivery.count > 0 {
            lock(&self.delivery).merge(&t.delivery);
        }
    }

    pub fn reload(&self, script: &str, ok: bool) {
        let mut m = lock(&self.scripts);
        let f = script_entry(&mut m, script);
        if ok {
            f.reloads_ok += 1;
        } else {
            f.reloads_failed += 1;
        }
    }

    pub fn lua_memory(&self, script: &str, bytes: usize) {
        script_entry(&mut lock(&self.scripts), script).lua_memory_bytes = bytes as u64;
    }

    /// A commit wrote `bytes` of the script's `agent.state`.
    pub fn state_written(&self, script: &str, bytes: u64) {
        script_entry(&mut lock(&self.scripts), script).state_bytes_written += bytes;
    }

    /// The watchdog declared the script stuck (`true`), or a new version replaced it.
    pub fn script_stuck(&self, script: &str, stuck: bool) {
        script_entry(&mut lock(&self.scripts), script).stuck = stuck as u64;
    }

    /// How many versions of the script are stuck in a call whose thread has not ended.
    pub fn stuck_versions(&self, script: &str, n: usize) {
        script_entry(&mut lock(&self.scripts), script).stuck_versions = n as u64;
    }

    /// A new version of the script waits (`true`) for a stuck version's thread to end, or no
    /// longer does.
    pub fn script_waiting(&self, script: &str, waiting: bool) {
        script_entry(&mut lock(&self.scripts), script).waiting = waiting as u64;
    }

    pub fn set_health(&self, state: HealthState, error: Option<String>) {
        let mut h = lock(&self.health);
        if h.0 != state {
            h.1 = Instant::now();
        }
        h.0 = state;
        if error.is_some() || state == HealthState::Polling {
            h.2 = error;
        }
    }

    /// The account's state and whether it has a last error: what readiness needs, without
    /// `health`'s copies (read for every account four times a second).
    pub fn health_state(&self) -> (HealthState, bool) {
        let h = lock(&self.health);
        (h.0, h.2.is_some())
    }

    pub fn health(&self) -> Health {
        let scripts = lock(&self.scripts);
        let stuck_scripts: Vec<String> = scripts.iter().filter(|(_, f)| f.stuck != 0).map(|(n, _)| n.clone()).collect();
        let stuck_versions: BTreeMap<String, u64> = scripts.iter().filter(|(_, f)| f.stuck_versions != 0).map(|(n, f)| (n.clone(), f.stuck_versions)).collect();
        let mut warnings: Vec<String> = lock(&self.warnings).values().cloned().collect();
        warnings.extend(scripts.iter().filter(|(_, f)| f.waiting != 0).map(|(n, f)| {
            format!(
                "script {n}: its new version waits until one of its {} stuck versions returns from its call (at most {} are kept per script)",
                f.stuck_versions, MAX_STUCK_VERSIONS
            )
        }));
        drop(scripts);
        let h = lock(&self.health);
        let status = if stuck_scripts.is_empty() && warnings.is_empty() { "ok" } else { "degraded" };
        Health { status, state: h.0, stuck_scripts, stuck_versions, warnings, for_secs: h.1.elapsed().as_secs(), last_error: h.2.clone() }
    }

    /// Sets (Some) or clears (None) the standing warning of kind `what` shown by `/healthz`.
    pub fn set_warning(&self, what: &'static str, text: Option<String>) {
        let mut w = lock(&self.warnings);
        match text {
            Some(t) => {
                w.insert(what, t);
            }
            None => {
                w.remove(what);
            }
        }
    }

    /// The Prometheus text format. `journal` is `(depth, [(script, lag)])`, read at scrape time.
    pub fn render(&self, journal: Option<(u64, Vec<(String, u64)>)>) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("ucwa_polls_total", "Event-channel requests sent.", self.polls.load(Ordering::Relaxed));
        counter("ucwa_batches_total", "Event-channel batches journaled and delivered.", self.batches.load(Ordering::Relaxed));
        counter("ucwa_sign_ins_total", "Successful sign-ins.", self.sign_ins.load(Ordering::Relaxed));
        counter(
            "ucwa_applications_total",
            "Applications created or resumed; more than sign-ins when the pool lost them (re-created with backoff).",
            self.applications_created.load(Ordering::Relaxed),
        );
        counter("ucwa_token_renewals_total", "Tokens obtained (first one included).", self.token_renewals.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ucwa_events_total Events received, by rel and type.\n# TYPE ucwa_events_total counter");
        for (rel, kinds) in lock(&self.events).iter() {
            for (kind, n) in kinds {
                let _ = writeln!(out, "ucwa_events_total{{rel=\"{}\",type=\"{}\"}} {n}", esc(rel), esc(kind));
            }
        }
        let _ = writeln!(out, "# HELP ucwa_recoveries_total Failures recovered from, by kind.\n# TYPE ucwa_recoveries_total counter");
        for (kind, n) in lock(&self.recoveries).iter() {
            let _ = writeln!(out, "ucwa_recoveries_total{{kind=\"{kind}\"}} {n}");
        }
        let scripts = lock(&self.scripts).clone();
        let per_script: [PerScript; 10] = [
            ("ucwa_handler_calls_total", "counter", "Handler calls, by script.", |f| f.handler_calls),
            ("ucwa_handler_errors_total", "counter", "Handler calls that failed (errors and limits), by script.", |f| f.handler_errors),
            ("ucwa_handler_limit_stops_total", "counter", "Handler calls stopped by a limit, by script.", |f| f.limit_stops),
            ("ucwa_reloads_ok_total", "counter", "Versions loaded, by script.", |f| f.reloads_ok),
            ("ucwa_reloads_failed_total", "counter", "Versions that failed to load, by script.", |f| f.reloads_failed),
            ("ucwa_lua_memory_bytes", "gauge", "Memory of the script's Lua state.", |f| f.lua_memory_bytes),
            ("ucwa_state_bytes_written_total", "counter", "Bytes of agent.state JSON written to the database, by script.", |f| f.state_bytes_written),
            ("ucwa_script_stuck", "gauge", "1 while the watchdog holds the script stuck (a call that does not return).", |f| f.stuck),
            (
                "ucwa_script_stuck_versions",
                "gauge",
                "Versions of the script stuck in a call (handler or top level) whose thread has not ended; each holds a thread and a Lua state.",
                |f| f.stuck_versions,
            ),
            ("ucwa_script_waiting", "gauge", "1 while a new version of the script waits for one of its stuck versions to return.", |f| f.waiting),
        ];
        for (name, kind, help, get) in per_script {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (script, f) in &scripts {
                let _ = writeln!(out, "{name}{{script=\"{}\"}} {}", esc(script), get(f));
            }
        }
        let _ = writeln!(out, "# HELP ucwa_handler_duration_seconds Handler run time, by script.\n# TYPE ucwa_handler_duration_seconds histogram");
        for (script, f) in &scripts {
            f.duration.render(&mut out, "ucwa_handler_duration_seconds", &format!("script=\"{}\"", esc(script)));
        }
        let _ = writeln!(
            out,
            "# HELP ucwa_event_delivery_seconds From a batch's arrival to a handler starting on one of its events.\n# TYPE ucwa_event_delivery_seconds histogram"
        );
        lock(&self.delivery).render(&mut out, "ucwa_event_delivery_seconds", "");
        if let Some((depth, lags)) = journal {
            let _ = writeln!(out, "# HELP ucwa_journal_depth Events kept in the journal.\n# TYPE ucwa_journal_depth gauge\nucwa_journal_depth {depth}");
            let _ = writeln!(out, "# HELP ucwa_journal_lag Events journaled that the script has not finished.\n# TYPE ucwa_journal_lag gauge");
            for (script, lag) in lags {
                let _ = writeln!(out, "ucwa_journal_lag{{script=\"{}\"}} {lag}", esc(&script));
            }
        }
        lock(&self.script_defined).render(&mut out);
        let h = self.health();
        let _ = writeln!(
            out,
            "# HELP ucwa_up 1 while signed in and polling.\n# TYPE ucwa_up gauge\nucwa_up {}\n# HELP ucwa_uptime_seconds Seconds since the agent (with [[account]]s: the account) started.\n# TYPE ucwa_uptime_seconds gauge\nucwa_uptime_seconds {}",
            (h.state == HealthState::Polling) as u8,
            self.started.elapsed().as_secs()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_channel_loop_is_not_late_until_its_wait_has_ended() {
        // Started 100 s ago, so that "late" can be told without waiting.
        let m = Metrics { started: Instant::now() - Duration::from_secs(100), ..Default::default() };
        m.loop_parked(Duration::from_secs(3600));
        assert_eq!(m.loop_overdue(), Duration::ZERO, "parked in a wait of an hour: alive, and nothing woke to say so");
        m.loop_busy();
        assert!(m.loop_overdue() < Duration::from_secs(50), "working since now");
        // A wait that was due to end 10 s ago and the loop did not run since: late by as much.
        m.due_ms.store(90_000, Ordering::Relaxed);
        assert!(m.loop_overdue() >= Duration::from_secs(10), "{:?}", m.loop_overdue());
    }

    #[test]
    fn histogram_buckets_render_cumulative_counts_and_merge() {
        let mut h = Histogram::default();
        for us in [5, 20, 20, 900, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut other = Histogram::default();
        other.observe(Duration::from_micros(30));
        h.merge(&other);
        let mut out = String::new();
        h.render(&mut out, "x", "");
        let le = |b: &str| out.lines().find_map(|l| l.strip_prefix(&format!("x_bucket{{le=\"{b}\"}} "))).map(|n| n.parse::<u64>().unwrap());
        assert_eq!(
            [le("0.00001"), le("0.000025"), le("0.00005"), le("0.001"), le("10"), le("+Inf")],
            [Some(1), Some(3), Some(4), Some(5), Some(5), Some(6)],
            "{out}"
        );
        assert_eq!((h.quantile(0.5), h.quantile(0.8), h.quantile(1.0)), (Some(0.000025), Some(0.001), None));
    }

    #[test]
    fn a_script_summary_gives_its_quantiles_as_bucket_bounds() {
        let m = Metrics::default();
        assert_eq!(m.script_summary("s").p50_ms, None, "nothing observed");
        for _ in 0..98 {
            m.handler("s", Duration::from_micros(400), false, false, None);
        }
        m.handler("s", Duration::from_millis(20), true, false, None);
        m.handler("s", Duration::from_millis(20), false, false, None);
        let s = m.script_summary("s");
        assert_eq!((s.handled, s.errors), (100, 1));
        assert_eq!((s.p50_ms, s.p99_ms), (Some(0.5), Some(25.0)));
        assert_eq!(m.account_summary().last_poll_secs_ago, None, "no poll yet");
        m.poll();
        assert_eq!(m.account_summary().last_poll_secs_ago, Some(0));
    }
}
