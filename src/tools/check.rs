//! `ucwa-agent check`: the configuration and every script, loaded as `run` would (sandbox,
//! top level, subscriptions), without signing in. Each problem names its file and line.

use crate::config::Config;
use crate::ucwa::rels::{closest, is_known_rel, types_for, KNOWN_RELS, KNOWN_TYPES};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// What stops `run` at start (exit status 2), each naming the file and key (or the flag):
    /// secrets not there, the scripts directory, the state directory, the metrics address.
    pub config: Vec<String>,
    pub problems: Vec<Problem>,
    /// Scripts that loaded, with their subscription count.
    pub loaded: Vec<(String, usize)>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }
}

/// Checks every script of the configuration's scripts directory, and of each account's own
/// `scripts_dir` (named `<account>/<script>` in the report); and what `run` opens at start: each
/// account's state directory (as `run` locks and opens it) and the metrics address
/// (`metrics_listen`: the `--metrics-listen` flag, which wins over `metrics.listen`).
pub fn check(config: &Config, metrics_listen: Option<SocketAddr>) -> Report {
    let mut report = Report { config: config.check_surroundings().iter().map(|e| e.to_string()).collect(), ..Report::default() };
    let file = config.path.display().to_string();
    let accounts = config.accounts().unwrap_or_default();
    for account in &accounts {
        report.config.extend(check_state_dir(&file, &account.state_dir));
    }
    // A running agent of this configuration holds its own metrics port: `check` before a
    // SIGHUP (the systemd units' ExecReload) must pass it, as it passes the state dir.
    let running = accounts.iter().any(|a| held_by_an_agent(&a.state_dir));
    report.config.extend(check_listen(config, metrics_listen, running));
    let mut dirs = vec![(String::new(), config.scripts_dir())];
    for account in &accounts {
        dirs.extend(account.scripts_dirs.get(1).map(|d| (format!("{}/", account.label()), d.clone())));
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (prefix, dir) in dirs {
        // An unreadable directory is in `report.config`.
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found = Vec::new();
        for path in rd.filter_map(|e| e.ok().map(|e| e.path())) {
            // `run` skips a file whose name is not UTF-8 without a word: say so here.
            if path.file_name().is_some_and(|n| n.to_str().is_none() && n.as_encoded_bytes().ends_with(b".lua")) && path.is_file() {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    file: path.clone(),
                    line: None,
                    message: "the file name is not valid UTF-8, so `run` skips this script; rename it".into(),
                });
            } else if crate::script::is_script_file(&path) {
                found.push(path);
            } else if let Some(why) = crate::script::not_a_script_file(&path) {
                report.problems.push(Problem {
                    severity: Severity::Error,
                    file: path.clone(),
                    line: None,
                    message: format!("{why}, so `run` skips this script"),
                });
            }
        }
        found.sort();
        files.extend(found.into_iter().map(|f| (prefix.clone(), f)));
    }
    let at = super::Offline { origin: super::replay::REPLAY_ORIGIN, application: super::OFFLINE_APPLICATION, missing: "not sent by `check`" };
    let env = Arc::new(super::offline_env(config.script_settings(), true, false, at));
    let api = known_names(&env);
    for (prefix, file) in files {
        let mut load_line = None;
        match crate::script::load_bounded(&file, 1, &env, Default::default()) {
            Err(e) => {
                // The message starts with `name.lua:LINE:` when Lua knows the line.
                let line = line_of(&e.message);
                load_line = line;
                // The line is said; Lua's traceback of a top level (`[C]: in ?`) says nothing more.
                let message = e.message.split("\nstack traceback:").next().unwrap_or_default().trim_end();
                // The problem line starts with file:line already: Lua's own `name.lua:LINE: ` is not said twice.
                let message = match (line, file.file_name().and_then(|n| n.to_str())) {
                    (Some(l), Some(name)) => without_position(message, name, l),
                    _ => message.to_string(),
                };
                report.problems.push(Problem { severity: Severity::Error, file: file.clone(), line, message });
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
        // Names of the API that do not exist, wherever they are (a handler's body runs only
        // when its event comes). A top-level one already failed the load on its line.
        if let (Some(api), Ok(source)) = (&api, std::fs::read_to_string(&file)) {
            for u in super::names::unknown_names(&source, api) {
                let hint = u.hint.map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default();
                let what = format!("`{}` does not exist in the agent API{hint}", u.path);
                // A top-level one failed the load on its line: one problem, with the hint.
                let at_load = report.problems.iter_mut().find(|p| p.file == file && load_line == Some(u.line) && p.line == load_line);
                match at_load {
                    Some(p) if !p.message.contains("does not exist in the agent API") => p.message = format!("{}: {what}", p.message),
                    _ => report.problems.push(Problem {
                        severity: Severity::Error,
                        file: file.clone(),
                        line: Some(u.line),
                        message: format!("{what}; calling it fails when this line runs"),
                    }),
                }
            }
        }
    }
    report.problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    report
}

/// The `agent` table a script gets, walked (None if a state cannot be built: then the loads
/// fail and say why).
fn known_names(env: &Arc<crate::script::ScriptEnv>) -> Option<super::names::Node> {
    let state = crate::script::build_state("check", 1, env, PathBuf::new(), Default::default()).ok()?;
    super::names::walk(&state.lua).ok()
}

/// The state directory as `run` takes it: locked, then `agent.db` opened (created) and written.
/// What did not exist before is removed again. A directory another agent holds is in use, so
/// it works: nothing to say.
fn check_state_dir(file: &str, dir: &Path) -> Option<String> {
    use crate::agent::StartError;
    use crate::store::{DirLock, LockError, Store};
    let mut created = None;
    let mut at = dir;
    while !at.as_os_str().is_empty() && std::fs::symlink_metadata(at).is_err() {
        created = Some(at.to_path_buf());
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let files = ["agent.db", "agent.db-wal", "agent.db-shm", "agent.lock"];
    let existed: Vec<bool> = files.iter().map(|f| std::fs::symlink_metadata(dir.join(f)).is_ok()).collect();
    let outcome = match DirLock::acquire(dir) {
        Err(LockError::Held { .. }) => None,
        Err(source) => Some(StartError::Locked { file: file.to_string(), source }.to_string()),
        Ok(lock) => {
            let opened = Store::open(dir).err().map(|source| StartError::State { file: file.to_string(), source }.to_string());
            drop(lock);
            opened
        }
    };
    match created {
        Some(top) => {
            let _ = std::fs::remove_dir_all(top);
        }
        None => {
            for (f, existed) in files.iter().zip(existed) {
                if !existed {
                    let _ = std::fs::remove_file(dir.join(f));
                }
            }
        }
    }
    outcome
}

/// The metrics address `run` would listen on, bound and released. A failure names what set it.
fn check_listen(config: &Config, flag: Option<SocketAddr>, agent_running: bool) -> Option<String> {
    let (addr, by) = match (flag, config.metrics.listen) {
        (Some(addr), _) => (addr, "--metrics-listen".to_string()),
        (None, Some(addr)) => (addr, format!("{}: `metrics.listen`", config.path.display())),
        (None, None) => return None,
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => None,
        // In use, most likely by the agent that runs this configuration.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && agent_running => None,
        Err(e) => Some(format!("{by}: cannot listen on {addr}: {e}")),
    }
}

/// Whether a running agent holds `dir`'s lock (nothing is created when it has none).
fn held_by_an_agent(dir: &Path) -> bool {
    dir.join("agent.lock").is_file() && matches!(crate::store::DirLock::acquire(dir), Err(crate::store::LockError::Held { .. }))
}

/// `message` without the first `name:line: ` in it (`syntax error: x.lua:3: unexpected symbol`
/// → `syntax error: unexpected symbol`).
fn without_position(message: &str, name: &str, line: usize) -> String {
    let at = format!("{name}:{line}: ");
    match message.find(&at) {
        Some(i) => format!("{}{}", &message[..i], &message[i + at.len()..]),
        None => message.to_string(),
    }
}

/// `12` from `call_log.lua:12: …` (or `syntax error: call_log.lua:12: …`).
fn line_of(message: &str) -> Option<usize> {
    let at = message.find(".lua:")? + ".lua:".len();
    let digits: String = message[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}
