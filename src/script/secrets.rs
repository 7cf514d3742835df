//! Secrets in `[scripts.config.<name>]`: a value written `{ env = "VAR" }` or
//! `{ file = "path" }` is read when the script loads (each version: a rotated file is picked up
//! by a reload) and given to the script as a plain string. The values read are kept so that no
//! log line or error of that script prints them: they show as `[redacted]`.

use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

pub(crate) const REDACTED: &str = "[redacted]";

/// Replaces every secret reference in `config` by its value; the values read; or which key
/// could not be read. With `placeholders`, nothing is read: each reference becomes `<secret:VAR>` or
/// `<secret:file NAME>` (`replay` and `test`, which never need, and never show, a real secret).
pub(crate) fn resolve_as(config: &Value, placeholders: bool) -> Result<(Value, Redactor), String> {
    let mut found = Vec::new();
    let resolved = walk(config, "agent.config", &mut found, placeholders)?;
    // Longest first: a secret inside another is hidden with the whole of the longer one.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    Ok((resolved, Redactor(Arc::new(found))))
}

fn placeholder(o: &serde_json::Map<String, Value>) -> String {
    match (o.get("env").and_then(Value::as_str), o.get("file").and_then(Value::as_str)) {
        (Some(var), _) => format!("<secret:{var}>"),
        (_, Some(file)) => format!("<secret:file {}>", std::path::Path::new(file).file_name().map_or(file.into(), |n| n.to_string_lossy())),
        _ => "<secret>".into(),
    }
}

fn walk(v: &Value, path: &str, found: &mut Vec<String>, placeholders: bool) -> Result<Value, String> {
    match v {
        Value::Object(o) if o.len() == 1 && (o.contains_key("env") || o.contains_key("file")) => {
            if placeholders {
                return Ok(Value::String(placeholder(o)));
            }
            let secret = read(o, path)?;
            if secret.chars().count() >= 3 {
                found.push(secret.clone());
            }
            Ok(Value::String(secret))
        }
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, m) in o {
                out.insert(k.clone(), walk(m, &format!("{path}.{k}"), found, placeholders)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => {
            items.iter().enumerate().map(|(i, m)| walk(m, &format!("{path}[{}]", i + 1), found, placeholders)).collect::<Result<Vec<_>, _>>().map(Value::Array)
        }
        other => Ok(other.clone()),
    }
}

fn read(o: &serde_json::Map<String, Value>, path: &str) -> Result<String, String> {
    if let Some(var) = o.get("env") {
        let var = var.as_str().ok_or_else(|| format!("{path}: `env` must name an environment variable"))?;
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{path}: the environment variable {var} is not set")),
        };
    }
    let file = o.get("file").and_then(Value::as_str).ok_or_else(|| format!("{path}: `file` must be a path"))?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{path}: cannot read {file}: {e}"))?;
    // A file written by `echo` ends with a newline that is not part of the secret.
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(format!("{path}: {file} is empty"));
    }
    Ok(secret)
}

/// The secret values one script version read; `redact` hides them in a text.
#[derive(Clone, Default, Debug)]
pub(crate) struct Redactor(Arc<Vec<String>>);

impl Redactor {
    pub(crate) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.0.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
        out
    }

    /// Whether `text` holds one of the secrets.
    pub(crate) fn finds(&self, text: &str) -> bool {
        self.0.iter().any(|s| text.contains(s.as_str()))
    }

    /// Every string inside a JSON value (log fields), keys included, redacted.
    pub(crate) fn redact_value(&self, v: &mut Value) {
        if self.0.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_value(i)),
            Value::Object(o) => {
                o.values_mut().for_each(|m| self.redact_value(m));
                // A secret used as a key (`{[token] = 1}`) is printed as much as a value is.
                if o.keys().any(|k| self.finds(k)) {
                    let taken = std::mem::take(o);
                    for (k, v) in taken {
                        o.insert(self.redact(&k).into_owned(), v);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_read_and_their_values_redacted() {
        std::env::set_var("UCWA_AGENT_SECRET_TEST", "s3cr3t-token");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hook");
        std::fs::write(&file, "https://hooks.example.com/T0/B0/XyZ\n").unwrap();
        let config = json!({"token": {"env": "UCWA_AGENT_SECRET_TEST"}, "hook": {"file": file}, "plain": "hello", "env": "not a secret"});
        let (resolved, r) = resolve_as(&config, false).unwrap();
        assert_eq!(resolved, json!({"token": "s3cr3t-token", "hook": "https://hooks.example.com/T0/B0/XyZ", "plain": "hello", "env": "not a secret"}));
        assert_eq!(r.redact("sent s3cr3t-token to https://hooks.example.com/T0/B0/XyZ"), "sent [redacted] to [redacted]");
        let mut fields = json!({"url": "https://hooks.example.com/T0/B0/XyZ?x=1", "n": 1, "s3cr3t-token": {"k-s3cr3t-token": 2}});
        r.redact_value(&mut fields);
        assert_eq!(fields, json!({"url": "[redacted]?x=1", "n": 1, "[redacted]": {"k-[redacted]": 2}}));
        assert!(r.finds("xs3cr3t-tokenx") && !r.finds("s3cr3t"));
        let e = resolve_as(&json!({"a": {"b": {"env": "UCWA_AGENT_SECRET_UNSET"}}}), false).unwrap_err();
        assert_eq!(e, "agent.config.a.b: the environment variable UCWA_AGENT_SECRET_UNSET is not set");
        let (offline, r) = resolve_as(&config, true).unwrap();
        assert_eq!((offline["token"].as_str(), offline["hook"].as_str()), (Some("<secret:UCWA_AGENT_SECRET_TEST>"), Some("<secret:file hook>")));
        assert_eq!(r.redact("s3cr3t-token"), "s3cr3t-token", "nothing was read");
        let e = resolve_as(&json!({"k": {"file": "/nonexistent/secret"}}), false).unwrap_err();
        assert!(e.starts_with("agent.config.k: cannot read /nonexistent/secret"), "{e}");
    }
}
