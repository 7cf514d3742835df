//! `ucwa-agent replay FILE [--script NAME]`: feeds a recorded file (one batch JSON per line, as
//! `record` writes it, or documentation samples put one per line) through the scripts offline,
//! and prints what each script did: the events it handled, its log lines, the requests it would
//! have sent, and its `agent.state` after each change.
//!
//! Offline means: `agent.ucwa.get(href)` answers a canned answer (`--answers FILE`), or the
//! latest resource the file's events embedded for that href (200), or 404; other `agent.ucwa`
//! calls and every `agent.http.request` are not sent, answered as canned or 204 / 200, and
//! printed as "would send". The application is the recording's (the first event href with
//! `/applications/<id>`), so `agent.me.*` and `agent.calls.*` ask for hrefs of the recording.
//! `agent.now()` starts at 2026-01-01T00:00:00Z and moves one second per batch; timers fire when
//! that clock passes them. The same file gives the same output.

use super::{offline_env, Offline, OFFLINE_APPLICATION};
use crate::config::Config;
use crate::script::offline::Canned;
use crate::script::{Net, ScriptHost, ScriptOutput};
use crate::ucwa::{batch, Origin};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Relative hrefs in a recording are resolved against this origin.
pub const REPLAY_ORIGIN: &str = "https://pool.replay.invalid";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--answers {}: {message}", path.display())]
    Answers { path: PathBuf, message: String },
    #[error("--script {name}: no script `{name}.lua` in {} (`scripts.dir` of {}); there are: {}", dir.display(), file.display(), if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    NoSuchScript { file: PathBuf, name: String, dir: PathBuf, known: Vec<String> },
}

/// What a replay printed, and whether the file or a script had errors.
#[derive(Debug, Default)]
pub struct Replayed {
    pub output: String,
    /// `FILE:LINE: …` for each line that is not a batch.
    pub bad_lines: Vec<String>,
    /// Scripts that failed to load.
    pub load_errors: Vec<String>,
    /// Handler (and timer) errors, each printed once in `output`.
    pub handler_errors: usize,
}

/// A canned answer of `--answers FILE`: a JSON array of
/// `{"method": "GET", "path": "me/presence", "status": 200, "body": {…}}`. `path`: an absolute
/// URL, a path on the pool, or a path relative to the application (no leading `/`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub method: String,
    pub path: String,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub body: serde_json::Value,
}

fn ok() -> u16 {
    200
}

fn read_answers(path: &Path) -> Result<Vec<Answer>, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str::<Vec<Answer>>(&text).map_err(|e| ReplayError::Answers {
        path: path.to_path_buf(),
        message: format!("{e}; expected a JSON array of {{\"method\": \"GET\", \"path\": \"me/presence\", \"status\": 200, \"body\": {{…}}}}"),
    })
}

/// The application href the recording's events are under (`…/applications/<id>`), as a path
/// when it is on the replay origin.
fn application_of(batches: &[Vec<u8>]) -> Option<String> {
    let origin = origin();
    for body in batches {
        let Ok(b) = batch::parse(body, &origin) else { continue };
        for ev in &b.events {
            for href in [ev.href(), ev.sender_href()] {
                let Some(at) = href.find("/applications/") else { continue };
                let rest = &href[at + "/applications/".len()..];
                let id = rest.split(['/', '?', '#']).next().unwrap_or_default();
                if id.is_empty() {
                    continue;
                }
                let app = &href[..at + "/applications/".len() + id.len()];
                return Some(app.strip_prefix(REPLAY_ORIGIN).unwrap_or(app).to_string());
            }
        }
    }
    None
}

/// The longest line read: a batch the agent recorded is at most the 32 MiB it reads of an
/// answer, so a longer line is not a recording (`replay /dev/zero` grew without end).
const MAX_LINE: u64 = 64 << 20;

/// The file's batches (each line that is one), as they were written.
fn read_batches(file: &Path, bad: &mut Vec<String>) -> Result<Vec<Vec<u8>>, ReplayError> {
    use std::io::{BufRead, Read};
    let failed = |source| ReplayError::Read { path: file.to_path_buf(), source };
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).map_err(failed)?);
    let origin = origin();
    let mut lines = Vec::new();
    let mut line = Vec::new();
    for i in 1.. {
        line.clear();
        if (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line).map_err(failed)? == 0 {
            break;
        }
        if line.len() as u64 > MAX_LINE {
            let message = format!("line {i} is longer than {} MiB: not a recording of event-channel batches", MAX_LINE >> 20);
            return Err(failed(std::io::Error::new(std::io::ErrorKind::InvalidData, message)));
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            bad.push(format!("{}:{i}: not an event-channel batch: not UTF-8 text", file.display()));
            continue;
        };
        let raw = text.trim_start_matches('\u{feff}').trim();
        if raw.is_empty() {
            continue;
        }
        match batch::parse(raw.as_bytes(), &origin) {
            Ok(_) => lines.push(raw.as_bytes().to_vec()),
            Err(e) => bad.push(format!("{}:{i}: not an event-channel batch: {e}", file.display())),
        }
    }
    Ok(lines)
}

fn origin() -> Origin {
    Origin::of(&url::Url::parse(REPLAY_ORIGIN).expect("a valid URL"))
}

/// Replays `file` through every script of the configuration (or only `only`).
/// `progress(done, total)` is called every 1,000 batches.
pub async fn replay(
    config: &Config,
    file: &Path,
    only: Option<&str>,
    answers: Option<&Path>,
    progress: &dyn Fn(usize, usize),
) -> Result<Replayed, ReplayError> {
    let mut out = Replayed::default();
    let lines = read_batches(file, &mut out.bad_lines)?;
    let answers = answers.map(read_answers).transpose()?.unwrap_or_default();
    let dir = config.scripts_dir();
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|source| ReplayError::Read { path: dir.clone(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| crate::script::is_script_file(p))
        .collect();
    all.sort();
    let stem = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let scripts: Vec<PathBuf> = all.iter().filter(|p| only.is_none_or(|n| stem(p) == n)).cloned().collect();
    if let (Some(name), true) = (only, scripts.is_empty()) {
        let known = all.iter().map(stem).collect();
        return Err(ReplayError::NoSuchScript { file: config.path.clone(), name: name.to_string(), dir, known });
    }
    for script in scripts {
        replay_one(config, &script, &lines, &answers, &mut out, progress).await;
    }
    Ok(out)
}

async fn replay_one(config: &Config, script: &Path, batches: &[Vec<u8>], answers: &[Answer], out: &mut Replayed, progress: &dyn Fn(usize, usize)) {
    let name = script.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
    let _ = writeln!(out.output, "== {name} ({})", script.display());
    let run = dry_run_with(config, script, batches, answers, progress).await;
    if let Some(e) = run.not_loaded {
        let _ = writeln!(out.output, "  not loaded: {}", e.message);
        out.load_errors.push(e.to_string());
        return;
    }
    for name in run.unfinished {
        let _ = writeln!(out.output, "  error: {name} did not finish its events within 60 s; its output is incomplete");
        out.load_errors.push(format!("{name}: did not finish within 60 s"));
    }
    for o in run.outputs {
        let line = match o {
            ScriptOutput::Event { seq, rel, kind, href, .. } => format!("#{seq} {rel} {kind} {href}"),
            ScriptOutput::Log { level, message, fields, .. } => match fields {
                Some(f) => format!("  {level}: {message} {f}"),
                None => format!("  {level}: {message}"),
            },
            ScriptOutput::Request { via, method, url, body, .. } => {
                format!("  would send ({via}): {method} {url}{}", body.map(|b| format!(" {b}")).unwrap_or_default())
            }
            ScriptOutput::State { json, .. } => format!("  state: {json}"),
            ScriptOutput::HandlerError { error, .. } => {
                out.handler_errors += 1;
                format!("  error: {}", error.lines().next().unwrap_or(""))
            }
            ScriptOutput::Paused { failures, .. } => format!("  paused after {failures} consecutive failures"),
            ScriptOutput::Stuck { doing, limit_ms, .. } => format!("  stuck: {doing} ran past its {limit_ms} ms limit and did not return"),
            ScriptOutput::Loaded { .. }
            | ScriptOutput::LoadFailed { .. }
            | ScriptOutput::Unloaded { .. }
            | ScriptOutput::Received { .. }
            | ScriptOutput::Trace { .. } => continue,
        };
        let _ = writeln!(out.output, "{line}");
    }
}

/// What one script did with some batches, offline (`dry_run`).
#[derive(Debug, Default)]
pub struct DryRun {
    /// Everything the script did, in order: the events it handled, its log lines, the requests
    /// it would have sent, its `agent.state` after each change, its errors.
    pub outputs: Vec<ScriptOutput>,
    /// Why the script did not load (then nothing ran).
    pub not_loaded: Option<crate::script::ScriptError>,
    /// Scripts that did not finish their events (stuck, or still busy after 60 s).
    pub unfinished: Vec<String>,
}

/// Runs `batches` (event-channel batch bodies, JSON, as `record` writes them one per line)
/// through `script` as `replay` does: the host and runner of `run`, requests answered offline
/// (`answers`, else the resources the batches embedded), the clock one second per batch from
/// 2026-01-01T00:00:00Z, the configuration's `[scripts]` settings. Nothing leaves the machine.
pub async fn dry_run(config: &Config, script: &Path, batches: &[Vec<u8>], answers: &[Answer]) -> DryRun {
    dry_run_with(config, script, batches, answers, &|_, _| {}).await
}

async fn dry_run_with(config: &Config, script: &Path, batches: &[Vec<u8>], answers: &[Answer], progress: &dyn Fn(usize, usize)) -> DryRun {
    let mut run = DryRun::default();
    let application = application_of(batches).unwrap_or_else(|| OFFLINE_APPLICATION.to_string());
    let at = Offline { origin: REPLAY_ORIGIN, application: &application, missing: "Not in the recording's events (give an answer with --answers FILE)." };
    let mut env = offline_env(config.script_settings(), true, true, at);
    if let Net::Offline(net) = &env.net {
        for a in answers {
            net.can(&a.method, &a.path, Canned { status: a.status, body: a.body.clone() });
        }
    }
    env.secret_placeholders = true;
    // Every output is kept, however much a batch produces (the broadcast stream would drop
    // what the report had not taken yet).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    env.collect = Some(tx);
    let (clock, net) = (env.clock.clone(), env.net.clone());
    let dir = script.parent().unwrap_or(Path::new(".")).to_path_buf();
    let host = ScriptHost::with_env(dir, env);
    if let Err(e) = host.load_file(script).await {
        run.not_loaded = Some(e);
        return run;
    }
    let origin = origin();
    let mut seq = 0u64;
    for (i, body) in batches.iter().enumerate() {
        if i > 0 && i % 1000 == 0 {
            progress(i, batches.len());
        }
        clock.advance(1000);
        let Ok(b) = batch::parse(body, &origin) else { continue };
        let mut events = b.events;
        for ev in &mut events {
            seq += 1;
            ev.seq = seq;
            if let Net::Offline(net) = &net {
                net.learn(ev.href(), ev.resource(), ev.kind() == "deleted");
            }
        }
        host.dispatch(events);
        // The next batch comes when this one is done: handlers see the clock and the
        // resources as of their own batch.
        host.barrier().await;
    }
    progress(batches.len(), batches.len());
    run.unfinished = host.shutdown(Duration::from_secs(60)).await;
    drop(host);
    rx.close();
    while let Ok(o) = rx.try_recv() {
        run.outputs.push(o);
    }
    run
}
