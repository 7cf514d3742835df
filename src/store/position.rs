//! Where an account's event channel stands (`Position`), and the file beside its database
//! (`position.json`) that holds the position of the empty batches that came while the pool had
//! the database closed (`Store::defer_position`): an idle account's long poll returns empty
//! every few minutes, and opening its database for each was most of what 10,000 idle accounts
//! cost. Writing this small file is a fraction of that, and a restart after a SIGKILL still
//! resumes from the newest position (an older ack would cost a `resync`).
//!
//! The file names the position the database held when it was written (`base`): it counts only
//! while the database still holds that one. Any later position the database takes (a batch
//! with events, a new application, a graceful stop's removal, an import) makes it stale, with
//! no need to remove it.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where the channel stands, so a restart resumes it without a gap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    /// The pool origin the application lives on.
    pub pool: String,
    pub user: String,
    /// The application's `self` href.
    pub application: String,
    /// `reportMyActivity` of the application.
    pub report_activity: String,
    /// The href to poll next (the `next`, `resync` or `resume` link of the last batch journaled).
    pub next: String,
}

/// The file's name in the account's state directory.
pub(super) const FILE: &str = "position.json";

#[derive(Serialize, Deserialize)]
struct Newer {
    /// The `next` of the position the database held.
    base: Option<String>,
    position: Position,
}

/// Records `p` as the position after the database's own `base` (its `next`). Not synced: a
/// SIGKILL keeps what was written; an OS crash may lose it, and the restart then resumes from
/// the database's position (the pool answers its older ack with `resync`).
pub(super) fn write(dir: &Path, base: Option<&str>, p: &Position) {
    let text = serde_json::to_vec(&Newer { base: base.map(str::to_string), position: p.clone() }).expect("positions serialize");
    if let Err(error) = std::fs::write(dir.join(FILE), text) {
        tracing::warn!(%error, file = %dir.join(FILE).display(), "cannot write the channel position beside the database; it is written at the database's next use");
    }
}

/// The position to resume from: the file's, if it follows what the database holds
/// (`in_db`), else the database's. A file that cannot be read or parsed (cut short by an OS
/// crash) does not count.
pub(super) fn newest(dir: &Path, in_db: Option<Position>) -> Option<Position> {
    let Ok(text) = std::fs::read(dir.join(FILE)) else { return in_db };
    match serde_json::from_slice::<Newer>(&text) {
        Ok(newer) if newer.base.as_deref() == in_db.as_ref().map(|p| p.next.as_str()) && in_db.is_some() => Some(newer.position),
        _ => in_db,
    }
}

/// Removes the file (an import replaces the account's state).
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}
