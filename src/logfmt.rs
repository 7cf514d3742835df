//! The two log line formats (`--log-format human|json`) and the default filter.
//!
//! Both know one thing tracing's own formats do not: a script's `agent.log` fields arrive as
//! one JSON text in the field `fields`. JSON lines carry them as a nested object (numbers stay
//! numbers, a shipper parses once); human lines spread them out as `key=value`. Human lines
//! also shorten UCWA hrefs to their path (`/ucwa/…`): the pool's origin, repeated on every
//! line, is in the `signed in` line.

use serde_json::{Map, Value};
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Dependencies whose debug output is connection-pool and TLS noise: kept at `warn` unless
/// `RUST_LOG` names them.
const QUIET_DEPENDENCIES: &[&str] = &["hyper", "hyper_util", "h2", "reqwest", "rustls", "tokio_rustls", "axum", "tower", "mio", "want", "notify"];

/// `RUST_LOG` (or `default`), with the noisy dependencies at `warn` unless it names them.
pub fn filter(rust_log: Option<&str>, default: &str) -> tracing_subscriber::EnvFilter {
    let asked = rust_log.filter(|s| !s.trim().is_empty());
    let text = asked.unwrap_or(default);
    let mut filter = tracing_subscriber::EnvFilter::try_new(text).unwrap_or_else(|error| {
        // (Logging is not up yet: said on standard error, once.)
        eprintln!("RUST_LOG={text:?} is not a log filter ({error}); using {default:?}");
        tracing_subscriber::EnvFilter::new(default)
    });
    for dep in QUIET_DEPENDENCIES {
        let named = text.split(',').any(|d| d.split(['=', '[', ':']).next().is_some_and(|t| t.trim() == *dep));
        if !named {
            filter = filter.add_directive(format!("{dep}=warn").parse().expect("a valid directive"));
        }
    }
    filter
}

/// One event as a line: human (`--log-format human`) or one JSON object (`json`).
pub struct LineFormat {
    pub json: bool,
    /// Colour the level (a person at a terminal).
    pub ansi: bool,
    /// Start each line with its syslog priority (`<3>` for errors…): standard error is
    /// journald's stream (`journal_stream`), which reads the prefix as the line's priority.
    pub journald: bool,
}

/// Whether standard error is the journal's stream: `$JOURNAL_STREAM` (`device:inode`, set by
/// systemd) names the very file standard error is.
pub fn journal_stream() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(expected) = std::env::var("JOURNAL_STREAM").ok().filter(|v| !v.is_empty()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    expected == format!("{}:{}", meta.dev(), meta.ino())
}

/// `line` with `<N>` before each of its lines, each cut at `JOURNALD_LINE_MAX` (journald splits a
/// longer line itself and would read a `<N>` at the start of the rest), NULs dropped (journald
/// reads one as a line break).
fn journald_lines(line: &str, priority: u8) -> String {
    let prefix = format!("<{priority}>");
    let mut out = String::with_capacity(line.len() + 4);
    for (i, l) in line.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&prefix);
        let mut taken = 0;
        for c in l.chars().filter(|c| *c != '\0') {
            taken += c.len_utf8();
            if taken > JOURNALD_LINE_MAX {
                out.push('…');
                break;
            }
            out.push(c);
        }
    }
    out
}

/// Under journald's LineMax (48 KiB by default).
const JOURNALD_LINE_MAX: usize = 16 * 1024;

/// The syslog priority journald files a line under (`journalctl -p err`).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The fields of the spans the event is in (an account's `account`), outermost first;
        // kept as JSON by `JsonFields` (see `main.rs`).
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(text) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) {
                    for (k, v) in o {
                        if !fields.pairs.iter().any(|(e, _)| *e == k) {
                            fields.span_pairs.push((k, v));
                        }
                    }
                }
            }
        }
        let meta = event.metadata();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let line =
            if self.json { json_line(&time, meta.level(), meta.target(), fields) } else { human_line(&time, meta.level(), meta.target(), fields, self.ansi) };
        if self.journald {
            // journald files each line of its stream apart: every line of a multi-line message
            // (a TOML error's caret display) carries the priority, so `journalctl -p err` shows it all.
            writeln!(writer, "{}", journald_lines(&line, priority(meta.level())))
        } else {
            writeln!(writer, "{line}")
        }
    }
}

/// An event's fields in order; `message` apart; a script's `fields` parsed.
#[derive(Default)]
struct Fields {
    message: String,
    /// From the spans around the event, shown first.
    span_pairs: Vec<(String, Value)>,
    pairs: Vec<(&'static str, Value)>,
    script_fields: Option<Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "fields" => {
                if !value.is_empty() {
                    self.script_fields = Some(serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string())));
                }
            }
            name => self.pairs.push((name, Value::String(value.to_string()))),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pairs.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pairs.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.pairs.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pairs.push((field.name(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` arrives here as Display; the message as format_args.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.pairs.push((field.name(), Value::String(text)));
        }
    }
}

/// The keys every JSON line has (or may have) of its own.
const RESERVED: &[&str] = &["timestamp", "level", "target", "message", "fields"];

fn json_line(time: &str, level: &Level, target: &str, f: Fields) -> String {
    let mut o = Map::new();
    o.insert("timestamp".into(), time.into());
    o.insert("level".into(), level.as_str().into());
    o.insert("target".into(), target.into());
    o.insert("message".into(), f.message.into());
    for (k, v) in f.span_pairs {
        o.insert(if RESERVED.contains(&k.as_str()) { format!("field.{k}") } else { k }, v);
    }
    for (k, v) in f.pairs {
        // An event field never replaces the line's own keys.
        let k = if RESERVED.contains(&k) { format!("field.{k}") } else { k.to_string() };
        o.insert(k, v);
    }
    if let Some(v) = f.script_fields {
        o.insert("fields".into(), v);
    }
    Value::Object(o).to_string()
}

fn human_line(time: &str, level: &Level, target: &str, f: Fields, ansi: bool) -> String {
    let mut line = String::with_capacity(160);
    let _ = write!(line, "{time} ");
    let colour = match *level {
        Level::ERROR => "31",
        Level::WARN => "33",
        Level::INFO => "32",
        Level::DEBUG => "34",
        Level::TRACE => "35",
    };
    if ansi {
        let _ = write!(line, "\x1b[{colour}m{:>5}\x1b[0m ", level.as_str());
    } else {
        let _ = write!(line, "{:>5} ", level.as_str());
    }
    // A script's message is its own text: control characters are shown escaped, so no
    // message can start a forged line of its own or send escapes to a terminal. The agent's
    // own messages keep their line breaks (a TOML error's caret display), never escapes.
    let _ = write!(line, "{target}: ");
    push_escaped(&mut line, &f.message, target != "script");
    for (k, v) in &f.span_pairs {
        push_pair(&mut line, k, v);
    }
    for (k, v) in &f.pairs {
        push_pair(&mut line, k, v);
    }
    match &f.script_fields {
        Some(Value::Object(o)) => o.iter().for_each(|(k, v)| push_pair(&mut line, k, v)),
        Some(other) => push_pair(&mut line, "fields", other),
        None => {}
    }
    line
}

/// `text` with control characters written as `\n`, `\r`, `\t` or `\u{1b}` (line breaks and
/// tabs kept when `keep_breaks`).
fn push_escaped(line: &mut String, text: &str, keep_breaks: bool) {
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_breaks => line.push(c),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
}

fn push_pair(line: &mut String, key: &str, value: &Value) {
    // A key is a script's text too (`agent.log` fields): control characters shown escaped.
    let escaped;
    let key = if key.chars().any(|c| c.is_control()) {
        let mut k = String::with_capacity(key.len() + 8);
        push_escaped(&mut k, key, false);
        escaped = k;
        escaped.as_str()
    } else {
        key
    };
    let _ = match value {
        Value::String(s) => write!(line, " {key}={}", human_text(s)),
        // A table: its JSON, quoted like any text with spaces or quotes.
        Value::Object(_) | Value::Array(_) => {
            write!(line, " {key}={}", human_text(&value.to_string()))
        }
        other => write!(line, " {key}={other}"),
    };
}

/// A string as a person reads it: a UCWA href as its path, quoted only when it must be.
fn human_text(s: &str) -> String {
    let s = short_href(s);
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

/// `https://pool.example.com:443/ucwa/oauth/v1/applications/1/…` → `/ucwa/oauth/v1/applications/1/…`.
fn short_href(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")) else {
        return s;
    };
    match rest.find('/') {
        Some(at) if rest[at..].starts_with("/ucwa/") => &rest[at..],
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script_line() -> Fields {
        Fields {
            message: "call started".into(),
            span_pairs: vec![("account".into(), "reception".into())],
            pairs: vec![("script", "call_log".into()), ("seq", 11.into())],
            script_fields: Some(
                serde_json::json!({"caller": "sip:alice@contoso.com", "href": "http://127.0.0.1:4000/ucwa/oauth/v1/applications/1/communication/conversations/2", "ms": 42, "note": "two words"}),
            ),
        }
    }

    #[test]
    fn json_lines_nest_script_fields_and_keep_numbers() {
        let line: Value = serde_json::from_str(&json_line("T", &Level::INFO, "script", script_line())).unwrap();
        assert_eq!(line["fields"]["ms"], 42);
        assert_eq!(line["fields"]["href"], "http://127.0.0.1:4000/ucwa/oauth/v1/applications/1/communication/conversations/2", "JSON keeps hrefs whole");
        assert_eq!((line["level"].as_str(), line["script"].as_str(), line["seq"].as_u64()), (Some("INFO"), Some("call_log"), Some(11)));
        assert_eq!(line["account"], "reception", "an account's span field is a key of the line");
    }

    #[test]
    fn human_lines_spread_fields_and_shorten_ucwa_hrefs() {
        let line = human_line("T", &Level::INFO, "script", script_line(), false);
        assert_eq!(
            line,
            "T  INFO script: call started account=reception script=call_log seq=11 caller=sip:alice@contoso.com href=/ucwa/oauth/v1/applications/1/communication/conversations/2 ms=42 note=\"two words\""
        );
        assert_eq!(short_href("https://hooks.example.com/x"), "https://hooks.example.com/x", "only UCWA paths are shortened");
        assert!(human_line("T", &Level::WARN, "t", Fields::default(), true).contains("\x1b[33m WARN\x1b[0m"));
    }

    #[test]
    fn a_message_cannot_forge_a_line_or_reach_the_terminal() {
        let f = Fields { message: "line1\n2026-12-05T00:00:00Z ERROR ucwa_agent: FORGED\u{1b}[31mred".into(), ..Fields::default() };
        let line = human_line("T", &Level::INFO, "script", f, false);
        assert_eq!(line, "T  INFO script: line1\\n2026-12-05T00:00:00Z ERROR ucwa_agent: FORGED\\u{1b}[31mred");
        assert!(!line.contains('\n') && !line.contains('\u{1b}'));
        let own = Fields { message: "bad.toml: TOML parse error\n  |\u{1b}[2J".into(), ..Fields::default() };
        assert_eq!(human_line("T", &Level::ERROR, "ucwa_agent", own, false), "T ERROR ucwa_agent: bad.toml: TOML parse error\n  |\\u{1b}[2J");
        assert_eq!((priority(&Level::ERROR), priority(&Level::WARN), priority(&Level::INFO)), (3, 4, 6));
        assert_eq!(journald_lines("T ERROR x: bad.toml: TOML parse error\n  |\n1 | [x", 3), "<3>T ERROR x: bad.toml: TOML parse error\n<3>  |\n<3>1 | [x");
        assert_eq!(journald_lines("a\0<0>EMERG", 6), "<6>a<0>EMERG");
        assert!(journald_lines(&"x".repeat(100_000), 6).len() < JOURNALD_LINE_MAX + 16);
        let keys = Fields { message: "m".into(), script_fields: Some(serde_json::json!({"a\nFORGED x": "v", "esc\u{1b}[2J": 1})), ..Fields::default() };
        let line = human_line("T", &Level::INFO, "script", keys, false);
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
    }

    #[test]
    fn fields_never_replace_the_lines_own_keys() {
        let f = Fields { message: "m".into(), span_pairs: vec![], pairs: vec![("level", "debug".into()), ("target", "x".into())], script_fields: None };
        let line: Value = serde_json::from_str(&json_line("T", &Level::INFO, "t", f)).unwrap();
        assert_eq!((line["level"].as_str(), line["field.level"].as_str(), line["target"].as_str()), (Some("INFO"), Some("debug"), Some("t")));
        let nested = Fields { message: "m".into(), span_pairs: vec![], pairs: vec![], script_fields: Some(serde_json::json!({"who": {"name": "Bob Brown"}})) };
        assert!(human_line("T", &Level::INFO, "t", nested, false).ends_with(r#" who="{\"name\":\"Bob Brown\"}""#));
    }

    #[test]
    fn dependencies_stay_at_warn_unless_named() {
        let f = filter(Some("debug"), "info").to_string();
        assert!(f.contains("hyper=warn") && f.contains("reqwest=warn"), "{f}");
        let f = filter(Some("debug,hyper=trace"), "info").to_string();
        assert!(f.contains("hyper=trace") && !f.contains("hyper=warn"), "{f}");
    }
}
