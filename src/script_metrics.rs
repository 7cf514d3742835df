//! Metrics that scripts define (`agent.metrics.counter/gauge/histogram`), exported on
//! `/metrics` as `ucwa_script_<name>` with a `script` label. They belong to the agent, not to
//! a script version: a reload keeps their values. Names, labels and the number of series are
//! checked, so a script cannot grow `/metrics` without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Names of the agent's own metrics under `ucwa_script_`.
const RESERVED: &[&str] = &["stuck"];

/// Label combinations one script may create per metric.
pub const MAX_SERIES: usize = 1000;
/// Metrics one script may define.
pub const MAX_METRICS: usize = 100;
/// Label names one metric may have.
pub const MAX_LABELS: usize = 5;
/// Bytes the series of one script's metrics may hold, label text included (a series costs its
/// label names and values, the script's name, and 128 bytes besides): the counts above alone
/// let a script hold about 180 MB outside its Lua memory limit.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// Bytes the series of every script of every account may hold together (the budget is
/// shared through `ScriptMetrics::share_budget`): `/metrics` stays a page of tens of MiB.
pub const MAX_AGENT_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Series {
    value: f64,
    /// Histograms: per-bucket counts (not cumulative), then count and sum.
    buckets: Vec<u64>,
    count: u64,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    buckets: Vec<f64>,
    /// The scripts that defined it.
    owners: std::collections::BTreeSet<String>,
    /// (script, label values in label-name order) → series.
    series: BTreeMap<(String, Vec<(String, String)>), Series>,
}

/// Every script-defined metric of the agent.
#[derive(Debug, Default)]
pub struct ScriptMetrics {
    families: BTreeMap<String, Family>,
    /// Bytes of series per script (see `MAX_SCRIPT_BYTES`).
    bytes: BTreeMap<String, usize>,
    /// Bytes of series of the whole agent, shared by every account's `ScriptMetrics`.
    agent_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The name a family is exported under: counters end in `_total` (OpenMetrics).
fn exported(name: &str, kind: Kind) -> String {
    match kind {
        Kind::Counter if !name.ends_with("_total") => format!("ucwa_script_{name}_total"),
        _ => format!("ucwa_script_{name}"),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ScriptMetrics {
    /// Defines (or finds again, after a reload) `name` for `script`. The same name must keep
    /// its kind and buckets across scripts and versions.
    pub fn define(&mut self, script: &str, name: &str, kind: Kind, help: &str, buckets: Vec<f64>) -> Result<(), String> {
        if !valid_name(name) {
            return Err(format!("`{name}` is not a metric name: 1 to 64 of a-z, 0-9 and _, not starting with a digit"));
        }
        // The agent's own `ucwa_script_*` metrics, and the series names of histograms: a clash
        // would make the whole page unreadable to Prometheus.
        if RESERVED.contains(&name) || ["_bucket", "_sum", "_count"].iter().any(|s| name.ends_with(s)) {
            return Err(format!("`{name}` is reserved (the agent's own metric, or a histogram's _bucket/_sum/_count)"));
        }
        if kind == Kind::Histogram
            && (buckets.is_empty() || buckets.len() > 30 || buckets.windows(2).any(|w| w[0] >= w[1]) || buckets.iter().any(|b| !b.is_finite()))
        {
            return Err(format!("{name}: buckets must be 1 to 30 finite numbers in increasing order"));
        }
        if let Some(f) = self.families.get(name) {
            if f.kind != kind || f.buckets != buckets {
                return Err(format!("{name} is already a {} with other buckets or another kind", f.kind.as_str()));
            }
        } else if let Some((other, _)) = self.families.iter().find(|(n, f)| exported(n, f.kind) == exported(name, kind)) {
            // A counter `x` and a gauge `x_total` would be one name on the page.
            return Err(format!("{name}: exported as {}, which the metric `{other}` already is", exported(name, kind)));
        }
        let mine = self.families.values().filter(|f| f.owners.contains(script)).count();
        let known = self.families.get(name).is_some_and(|f| f.owners.contains(script));
        if !known && mine >= MAX_METRICS {
            return Err(format!("{name}: a script may define at most {MAX_METRICS} metrics"));
        }
        let help: String = help.chars().filter(|c| !c.is_control()).take(200).collect();
        let f = self.families.entry(name.to_string()).or_insert_with(|| Family { kind, help, buckets, owners: Default::default(), series: BTreeMap::new() });
        f.owners.insert(script.to_string());
        Ok(())
    }

    /// Applies `f` to the series of `script` with `labels` (created at zero if new).
    pub fn update(&mut self, script: &str, name: &str, labels: Vec<(String, String)>, f: impl FnOnce(&mut Series, &[f64])) -> Result<(), String> {
        let family = self.families.get_mut(name).filter(|f| f.owners.contains(script)).ok_or_else(|| format!("{name} is not defined"))?;
        if labels.len() > MAX_LABELS {
            return Err(format!("{name}: at most {MAX_LABELS} labels"));
        }
        for (k, v) in &labels {
            // `account` is the agent's: it labels every sample of an account's scripts.
            if !valid_name(k) || k == "script" || k == "le" || k == "account" {
                return Err(format!("{name}: `{k}` is not a label name (a-z, 0-9, _; not `script`, `le` or `account`)"));
            }
            if v.len() > 200 {
                return Err(format!("{name}: the value of label `{k}` is longer than 200 bytes"));
            }
        }
        let key = (script.to_string(), labels);
        if !family.series.contains_key(&key) {
            let mine = family.series.keys().filter(|(s, _)| s == script).count();
            if mine >= MAX_SERIES {
                return Err(format!(
                    "{name}: {MAX_SERIES} label combinations already; a label that takes unbounded values (an href, a caller) does not belong in a metric"
                ));
            }
            let cost = 128 + script.len() + 8 * family.buckets.len() + key.1.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let held = self.bytes.get(script).copied().unwrap_or(0);
            if held + cost > MAX_SCRIPT_BYTES {
                return Err(format!(
                    "{name}: this script's metrics would hold more than {} KiB of series (labels included); a label that takes unbounded or long values does not belong in a metric",
                    MAX_SCRIPT_BYTES >> 10
                ));
            }
            use std::sync::atomic::Ordering;
            let reserved = self.agent_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b + cost <= MAX_AGENT_BYTES).then_some(b + cost));
            if reserved.is_err() {
                return Err(format!("{name}: the scripts of this agent hold {} MiB of metric series, the most it keeps; no new series", MAX_AGENT_BYTES >> 20));
            }
            *self.bytes.entry(script.to_string()).or_default() += cost;
        }
        let buckets = family.buckets.clone();
        let series = family.series.entry(key).or_insert_with(|| Series { buckets: vec![0; buckets.len()], ..Series::default() });
        f(series, &buckets);
        Ok(())
    }

    /// Gives this registry's bytes back to the agent's budget (an account that stops or restarts).
    fn release(&mut self) {
        let held: usize = std::mem::take(&mut self.bytes).values().sum();
        let _ = self.agent_bytes.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |b| Some(b.saturating_sub(held)));
    }

    /// Counts this registry's series in `budget`, the agent's (one for every account).
    pub fn share_budget(&mut self, budget: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let held: usize = self.bytes.values().sum();
        budget.fetch_add(held, std::sync::atomic::Ordering::Relaxed);
        self.agent_bytes = budget;
    }

    /// Prometheus text for every family.
    pub fn render(&self, out: &mut String) {
        for (name, f) in &self.families {
            let full = exported(name, f.kind);
            let _ = writeln!(out, "# HELP {full} {}\n# TYPE {full} {}", f.help.replace('\\', "\\\\"), f.kind.as_str());
            for ((script, labels), s) in &f.series {
                let mut l = format!("script=\"{}\"", esc(script));
                for (k, v) in labels {
                    let _ = write!(l, ",{k}=\"{}\"", esc(v));
                }
                match f.kind {
                    Kind::Counter | Kind::Gauge => {
                        let _ = writeln!(out, "{full}{{{l}}} {}", s.value);
                    }
                    Kind::Histogram => {
                        let mut cumulative = 0;
                        for (b, n) in f.buckets.iter().zip(&s.buckets) {
                            cumulative += n;
                            let _ = writeln!(out, "{full}_bucket{{{l},le=\"{b}\"}} {cumulative}");
                        }
                        let _ = writeln!(out, "{full}_bucket{{{l},le=\"+Inf\"}} {}", s.count);
                        let _ = writeln!(out, "{full}_sum{{{l}}} {}\n{full}_count{{{l}}} {}", s.value, s.count);
                    }
                }
            }
        }
    }
}

impl Drop for ScriptMetrics {
    fn drop(&mut self) {
        self.release();
    }
}

impl Series {
    pub fn add(&mut self, by: f64) {
        self.value += by;
    }

    pub fn set(&mut self, to: f64) {
        self.value = to;
    }

    pub fn observe(&mut self, v: f64, buckets: &[f64]) {
        if let Some(i) = buckets.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.value += v;
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_series_and_limits() {
        let mut m = ScriptMetrics::default();
        m.define("a", "calls_total", Kind::Counter, "Calls.", vec![]).unwrap();
        m.define("b", "calls_total", Kind::Counter, "Calls.", vec![]).unwrap();
        assert!(m.define("a", "calls_total", Kind::Gauge, "", vec![]).unwrap_err().contains("already a counter"));
        assert!(m.define("a", "Calls", Kind::Gauge, "", vec![]).is_err());
        assert!(m.define("a", "stuck", Kind::Gauge, "", vec![]).unwrap_err().contains("reserved"));
        assert!(m.define("a", "x_count", Kind::Counter, "", vec![]).unwrap_err().contains("reserved"));
        m.update("a", "calls_total", vec![("direction".into(), "Incoming".into())], |s, _| s.add(2.0)).unwrap();
        m.update("b", "calls_total", vec![], |s, _| s.add(1.0)).unwrap();
        m.define("a", "seconds", Kind::Histogram, "Durations.", vec![1.0, 10.0]).unwrap();
        m.update("a", "seconds", vec![], |s, b| s.observe(5.0, b)).unwrap();
        m.update("a", "seconds", vec![], |s, b| s.observe(50.0, b)).unwrap();
        assert!(m.update("a", "seconds", vec![("le".into(), "x".into())], |s, b| s.observe(1.0, b)).is_err());
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("ucwa_script_calls_total{script=\"a\",direction=\"Incoming\"} 2"), "{out}");
        assert!(out.contains("ucwa_script_calls_total{script=\"b\"} 1"), "{out}");
        assert!(out.contains("ucwa_script_seconds_bucket{script=\"a\",le=\"10\"} 1") && out.contains("ucwa_script_seconds_count{script=\"a\"} 2"), "{out}");
        for i in 0..MAX_SERIES - 1 {
            m.update("a", "calls_total", vec![("n".into(), i.to_string())], |s, _| s.add(1.0)).unwrap();
        }
        let e = m.update("a", "calls_total", vec![("n".into(), "one more".into())], |s, _| s.add(1.0)).unwrap_err();
        assert!(e.contains("1000 label combinations"), "{e}");
        m.update("b", "calls_total", vec![("n".into(), "b's own".into())], |s, _| s.add(1.0)).unwrap();
    }

    #[test]
    fn counters_end_in_total_once() {
        let mut m = ScriptMetrics::default();
        m.define("a", "calls", Kind::Counter, "Calls.", vec![]).unwrap();
        m.define("a", "hooks_total", Kind::Counter, "Hooks.", vec![]).unwrap();
        assert!(m.define("a", "calls_total", Kind::Gauge, "", vec![]).unwrap_err().contains("exported as ucwa_script_calls_total"));
        m.update("a", "calls", vec![], |s, _| s.add(1.0)).unwrap();
        m.update("a", "hooks_total", vec![], |s, _| s.add(1.0)).unwrap();
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE ucwa_script_calls_total counter\nucwa_script_calls_total{script=\"a\"} 1"), "{out}");
        assert!(out.contains("ucwa_script_hooks_total{script=\"a\"} 1") && !out.contains("hooks_total_total"), "{out}");
    }

    #[test]
    fn series_are_held_to_a_byte_budget_per_script_and_per_agent() {
        let agent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut m = ScriptMetrics::default();
        m.share_budget(agent.clone());
        // The adversarial trial's bomb: 5 labels of 200 bytes per series, inside every count limit.
        let labels = |i: usize| (0..5).map(|l| (format!("l{l}"), format!("{i:0>200}"))).collect::<Vec<_>>();
        let mut made = 0;
        let mut last = String::new();
        for metric in 0..MAX_METRICS {
            let name = format!("g{metric}");
            m.define("bomb", &name, Kind::Gauge, "", vec![]).unwrap();
            match (0..MAX_SERIES).try_for_each(|i| m.update("bomb", &name, labels(i), |s, _| s.set(1.0)).map(|()| made += 1)) {
                Ok(()) => {}
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        assert!(last.contains("g0: this script's metrics would hold more than 1024 KiB"), "{last}");
        assert!(made < 1000, "{made} series of about 1.1 KB each");
        let held = agent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(held <= MAX_SCRIPT_BYTES && held > MAX_SCRIPT_BYTES - 2048, "{held}");
        // Another script still has its own budget; the agent's is shared by all.
        m.define("other", "x", Kind::Gauge, "", vec![]).unwrap();
        m.update("other", "x", labels(1), |s, _| s.set(1.0)).unwrap();
        agent.store(MAX_AGENT_BYTES, std::sync::atomic::Ordering::Relaxed);
        let e = m.update("other", "x", labels(2), |s, _| s.set(1.0)).unwrap_err();
        assert!(e.contains("hold 32 MiB of metric series"), "{e}");
        m.update("other", "x", labels(1), |s, _| s.set(2.0)).expect("an existing series still updates");
        // An account that stops gives its bytes back (a restarted account must not leak them).
        agent.store(0, std::sync::atomic::Ordering::Relaxed);
        let mut a = ScriptMetrics::default();
        a.share_budget(agent.clone());
        a.define("s", "x", Kind::Gauge, "", vec![]).unwrap();
        a.update("s", "x", labels(1), |s, _| s.set(1.0)).unwrap();
        assert!(agent.load(std::sync::atomic::Ordering::Relaxed) > 1000);
        drop(a);
        assert_eq!(agent.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
