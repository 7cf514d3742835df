//! What the console shows of each script that only its runner knows: whether it is paused, its
//! last error (with `file:line`). Kept in the environment by script name, so that it outlives
//! a version (a new thread after a stuck one) and the host reads it without asking the thread.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The last error of a script's handler, timer or state save (redacted as in the log).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastError {
    /// Its first line, without the location.
    pub message: String,
    /// `file:line` in the script, when the error names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The event it failed on (0: a timer or the state).
    pub seq: u64,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// One script's line on the board.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub paused: bool,
    pub last_error: Option<LastError>,
}

/// Every script's entry (written only on an error, a pause or a resume: not on the hot path).
#[derive(Debug, Default)]
pub struct Board(Mutex<BTreeMap<String, Entry>>);

impl Board {
    fn with<R>(&self, script: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(script) {
            m.insert(script.to_string(), Entry::default());
        }
        f(m.get_mut(script).expect("inserted above"))
    }

    pub(crate) fn failed(&self, script: &str, error: &str, seq: u64) {
        let first = error.lines().next().unwrap_or_default();
        let at = super::location::error_location(error);
        // (The location is given apart: the message without it.)
        let message = at.as_deref().and_then(|a| first.strip_prefix(a)).and_then(|r| r.strip_prefix(": ")).unwrap_or(first).to_string();
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.with(script, |e| e.last_error = Some(LastError { message, at, seq, at_ms }));
    }

    pub(crate) fn set_paused(&self, script: &str, paused: bool) {
        self.with(script, |e| e.paused = paused);
    }

    /// The script's entry (a default one for a script with nothing to say).
    pub fn get(&self, script: &str) -> Entry {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(script).cloned().unwrap_or_default()
    }
}

/// One script of an account as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptStatus {
    pub name: String,
    /// The running version (none while no version loaded).
    pub version: Option<u64>,
    /// `loaded`, `paused` (too many failures in a row), `stuck` (a call never returned) or
    /// `failed` (no version loaded).
    pub state: &'static str,
    /// Why the last load failed (a running version stays), first line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}
