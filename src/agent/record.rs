//! `ucwa-agent record FILE` / `run --record FILE`: every event-channel batch, as received,
//! appended to a JSON Lines file (one compact batch per line) that `replay` reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Recorder {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path) -> std::io::Result<Recorder> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// Appends one batch; the body is re-serialised compactly so it fits on one line (its
    /// content is unchanged). A failure is logged; recording never stops the agent.
    pub fn record(&self, body: &[u8]) {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let line = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => v.to_string(),
            Err(error) => {
                tracing::warn!(%error, "not recording a batch that is not JSON");
                return;
            }
        };
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = writeln!(f, "{line}") {
            tracing::error!(file = %self.path.display(), %error, "cannot record the batch");
        }
    }
}
