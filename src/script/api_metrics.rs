//! `agent.metrics`: counters, gauges and histograms a script defines, exported on `/metrics`
//! as `ucwa_script_<name>{script="…", …labels}` (the registry is the agent's:
//! `script_metrics`). Each returns a handle whose methods take an optional label table.

use super::ctx::ScriptCtx;
use crate::script_metrics::Kind;
use mlua::{Lua, Table, Value};

/// `{direction = "Incoming"}` → sorted (name, value) pairs; values as text.
fn labels(v: Option<Table>) -> mlua::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(t) = v {
        for pair in t.pairs::<String, Value>() {
            let (k, v) = pair?;
            let text = match v {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => return Err(mlua::Error::runtime(format!("label `{k}`: a {} is not a label value", other.type_name()))),
            };
            out.push((k, text));
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn register(lua: &Lua, agent: &Table, ctx: &ScriptCtx) -> mlua::Result<()> {
    let t = lua.create_table()?;
    for kind in [Kind::Counter, Kind::Gauge, Kind::Histogram] {
        let (name, ctx) = (
            match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            },
            ctx.clone(),
        );
        let define = lua.create_function(move |lua, (metric, help, buckets): (String, Option<String>, Option<Vec<f64>>)| {
            let metrics = ctx.env.metrics.clone();
            let script = ctx.name.to_string();
            // `/metrics` is read by whoever can scrape it, another script included: a name
            // holding a secret is refused (redacted it would mean nothing), help text redacted.
            if ctx.redactor.finds(&metric) {
                return Err(mlua::Error::runtime(format!(
                    "agent.metrics.{name}: the metric name contains a secret of agent.config; it would be printed on /metrics"
                )));
            }
            let help = help.map(|h| ctx.redactor.redact(&h).into_owned());
            metrics
                .script_defined
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .define(&script, &metric, kind, help.as_deref().unwrap_or(""), buckets.unwrap_or_default())
                .map_err(|e| mlua::Error::runtime(format!("agent.metrics.{name}: {e}")))?;
            handle(lua, kind, metric, script, metrics, ctx.redactor.clone())
        })?;
        t.set(name, define)?;
    }
    agent.set("metrics", t)
}

/// The methods of one metric: `inc`/`dec`/`set` (counter: `inc` only, by ≥ 0) or `observe`.
fn handle(
    lua: &Lua,
    kind: Kind,
    metric: String,
    script: String,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    redactor: super::secrets::Redactor,
) -> mlua::Result<Table> {
    let h = lua.create_table()?;
    let op = |what: &'static str| {
        let (metric, script, metrics, redactor) = (metric.clone(), script.clone(), metrics.clone(), redactor.clone());
        lua.create_function(move |lua, (_self, by, l): (Value, Option<f64>, Option<Table>)| {
            let by = match (by, what) {
                (Some(b), _) => b,
                (None, "inc" | "dec") => 1.0,
                (None, _) => return Err(mlua::Error::runtime(format!("{metric}:{what}: a number is needed"))),
            };
            if !by.is_finite() || (what == "inc" && kind == Kind::Counter && by < 0.0) {
                return Err(mlua::Error::runtime(format!(
                    "{metric}:{what}: {by} is not a value for a {}",
                    match kind {
                        Kind::Counter => "counter (never decreases)",
                        Kind::Gauge => "gauge",
                        Kind::Histogram => "histogram",
                    }
                )));
            }
            let labels = labels(l)?;
            if labels.iter().any(|(k, _)| redactor.finds(k)) {
                return Err(mlua::Error::runtime(format!("{metric}:{what}: a label name contains a secret of agent.config; it would be printed on /metrics")));
            }
            let labels: Vec<(String, String)> = labels.into_iter().map(|(k, v)| (k, redactor.redact(&v).into_owned())).collect();
            metrics
                .script_defined
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(&script, &metric, labels, |s, buckets| match what {
                    "inc" => s.add(by),
                    "dec" => s.add(-by),
                    "set" => s.set(by),
                    _ => s.observe(by, buckets),
                })
                .map_err(|e| mlua::Error::runtime(format!("{metric}:{what}: {e}")))?;
            super::trace::record(lua, |at_us| super::trace::Step::Metric { at_us, name: metric.clone(), op: what.into(), value: by });
            Ok(())
        })
    };
    match kind {
        Kind::Counter => h.set("inc", op("inc")?)?,
        Kind::Gauge => {
            h.set("inc", op("inc")?)?;
            h.set("dec", op("dec")?)?;
            h.set("set", op("set")?)?;
        }
        Kind::Histogram => h.set("observe", op("observe")?)?,
    }
    Ok(h)
}
