//! `ucwa-agent check`: the configuration and every script, loaded as `run` would (sandbox,
//! top level, subscriptions), without signing in. Each problem names its file and line.

use crate::config::Config;
use crate::script::loader;
use crate::ucwa::rels::{closest, is_known_rel, types_for, KNOWN_RELS, KNOWN_TYPES};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: `file:line: severity: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(l) => write!(f, "{}:{l}: {sev}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {sev}: {}", self.file.display(), self.message),
        }
    }
}

/// What `check` found, and what it loaded.
#[derive(Debug, Default)]
pub struct Report {
    /// What stops `run` at start (exit status 2): secrets not there, the scripts directory.
    pub config: Vec<crate::config::ConfigError>,
    pub problems: Vec<Problem>,
    /// Scripts that loaded, with their subscription count.
    pub loaded: Vec<(String, usize)>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.severity == Severity::Error).count()
    }
}

/// Checks every script of the configuration's scripts directory, and of each account's own
/// `scripts_dir` (named `<account>/<script>` in the report).
pub fn check(config: &Config) -> Report {
    let mut report = Report { config: config.check_surroundings(), ..Report::default() };
    let mut dirs = vec![(String::new(), config.scripts_dir())];
    for account in config.accounts().unwrap_or_default() {
        dirs.extend(account.scripts_dirs.get(1).map(|d| (format!("{}/", account.label()), d.clone())));
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (prefix, dir) in dirs {
        // An unreadable directory is in `report.config`.
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| crate::script::is_script_file(p)).collect();
        found.sort();
        files.extend(found.into_iter().map(|f| (prefix.clone(), f)));
    }
    let env = Arc::new(super::offline_env(config.script_settings(), true, false));
    for (prefix, file) in files {
        match loader::load_bounded(&file, 1, &env, Default::default()) {
            Err(e) => {
                // The message starts with `name.lua:LINE:` when Lua knows the line.
                let line = line_of(&e.message);
                report.problems.push(Problem { severity: Severity::Error, file: file.clone(), line, message: e.message.clone() });
            }
            Ok(loaded) => {
                let subs = loaded.subscriptions().map(|s| s.snapshot()).unwrap_or_default();
                for sub in subs.iter() {
                    if !is_known_rel(&sub.rel) {
                        let hint = closest(&sub.rel, KNOWN_RELS).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                        report.problems.push(Problem {
                            severity: Severity::Warning,
                            file: file.clone(),
                            line: sub.line,
                            message: format!("agent.on: `{}` is not an event rel UCWA sends{hint}; this handler will never run", sub.rel),
                        });
                    }
                    let fitting = types_for(&sub.rel);
                    if let (Some(kind), Some(fitting)) = (sub.kind.as_deref().filter(|k| KNOWN_TYPES.contains(k)), fitting) {
                        if !fitting.contains(&kind) {
                            report.problems.push(Problem {
                                severity: Severity::Warning,
                                file: file.clone(),
                                line: sub.line,
                                message: format!(
                                    "agent.on: UCWA sends `{}` events of type {}, never `{kind}`; this handler will never run",
                                    sub.rel,
                                    fitting.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
                                ),
                            });
                        }
                    }
                    if let Some(kind) = sub.kind.as_deref().filter(|k| !KNOWN_TYPES.contains(k)) {
                        let hint = closest(kind, KNOWN_TYPES).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                        report.problems.push(Problem {
                            severity: Severity::Warning,
                            file: file.clone(),
                            line: sub.line,
                            message: format!("agent.on: `{kind}` is not an event type{hint}"),
                        });
                    }
                }
                report.loaded.push((format!("{prefix}{}", loaded.ctx.name), subs.len()));
            }
        }
    }
    report
}

/// `12` from `call_log.lua:12: …` (or `syntax error: call_log.lua:12: …`).
fn line_of(message: &str) -> Option<usize> {
    let at = message.find(".lua:")? + ".lua:".len();
    let digits: String = message[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
