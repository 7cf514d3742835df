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

impl Position {
    /// Whether `other` is a position of the same application (only its `next` differs).
    pub(super) fn same_application(&self, other: &Position) -> bool {
        // Spelled out field by field: a field added to `Position` must be placed here.
        let Position { pool, user, application, report_activity, next: _ } = self;
        *pool == other.pool && *user == other.user && *application == other.application && *report_activity == other.report_activity
    }
}

/// A position as `meta` holds it: with the journal's head when it was written. The journal
/// rows after that head carry the `next` of their batch (`db::position_in`): a batch with
/// events writes its row alone, not `meta` as well. The rows before it are older than the
/// position and never count.
#[derive(Serialize, Deserialize)]
pub(super) struct Saved<P> {
    #[serde(flatten)]
    pub position: P,
    /// (0 in a position written before the journal's rows held `next`: none of them does.)
    #[serde(default)]
    pub head: u64,
}

/// The file's name in the account's state directory.
pub(super) const FILE: &str = "position.json";

/// The file's length whatever it holds, unless a position is longer (hrefs run to about 100
/// bytes; a position with its base, to about 600).
const PADDED: usize = 1024;

/// The most of the file read back.
const MAX_READ: u64 = 64 * 1024;

/// A position at `next` (tests of the store).
#[cfg(test)]
pub(super) fn at(next: &str) -> Position {
    Position { pool: "p".into(), user: "u".into(), application: "/a".into(), report_activity: "/r".into(), next: next.into() }
}

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
    use std::os::unix::fs::FileExt;
    let mut text = serde_json::to_vec(&Newer { base: base.map(str::to_string), position: p.clone() }).expect("positions serialize");
    // Written over the last one in place, padded with spaces (JSON's whitespace): the file
    // keeps its length and its block, where truncating it each time freed and took one.
    text.resize(text.len().max(PADDED), b' ');
    let path = dir.join(FILE);
    let written = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path).and_then(|f| {
        f.write_all_at(&text, 0)?;
        if f.metadata()?.len() > text.len() as u64 {
            f.set_len(text.len() as u64)?;
        }
        Ok(())
    });
    if let Err(error) = written {
        tracing::warn!(%error, file = %path.display(), "cannot write the channel position beside the database; it is written at the database's next use");
    }
}

/// The position to resume from: the file's, if it follows what the database holds
/// (`in_db`), else the database's. A file that cannot be read or parsed (cut short by an OS
/// crash) does not count.
pub(super) fn newest(dir: &Path, in_db: Option<Position>) -> Option<Position> {
    use std::io::Read;
    // (Bounded: a file grown past any position is not one.)
    let mut text = Vec::new();
    let read = std::fs::File::open(dir.join(FILE)).and_then(|f| f.take(MAX_READ + 1).read_to_end(&mut text));
    if read.is_err() || text.len() as u64 > MAX_READ {
        return in_db;
    }
    match serde_json::from_slice::<Newer>(&text) {
        Ok(newer) if newer.base.as_deref() == in_db.as_ref().map(|p| p.next.as_str()) && in_db.is_some() => Some(newer.position),
        _ => in_db,
    }
}

/// Removes the file (an import replaces the account's state).
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written in place: a shorter position after a longer one (past the padding) reads back
    /// whole, and a position that does not follow the database's counts for nothing.
    #[test]
    fn the_file_written_over_in_place_reads_back_the_last_position() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("/a/events?ack=2&pad={}", "x".repeat(3000));
        write(dir.path(), Some("/a/events?ack=1"), &at(&long));
        assert_eq!(newest(dir.path(), Some(at("/a/events?ack=1"))), Some(at(&long)));
        write(dir.path(), Some("/a/events?ack=1"), &at("/a/events?ack=3"));
        assert_eq!(newest(dir.path(), Some(at("/a/events?ack=1"))), Some(at("/a/events?ack=3")));
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), PADDED as u64, "cut back to its padded length");
        write(dir.path(), Some("/a/events?ack=1"), &at("/a/events?ack=4"));
        assert_eq!(newest(dir.path(), Some(at("/a/events?ack=1"))), Some(at("/a/events?ack=4")));
        assert_eq!(newest(dir.path(), Some(at("/a/events?ack=5"))), Some(at("/a/events?ack=5")), "the database moved on");
        assert_eq!(newest(dir.path(), None), None, "a graceful stop removed the database's position");
        // A file grown past any position (here a valid one and 64 KiB of blanks) is not read whole.
        write(dir.path(), Some("/a/events?ack=1"), &at("/a/events?ack=6"));
        let mut grown = std::fs::read(dir.path().join(FILE)).unwrap();
        grown.resize(MAX_READ as usize + 1, b' ');
        std::fs::write(dir.path().join(FILE), grown).unwrap();
        assert_eq!(newest(dir.path(), Some(at("/a/events?ack=1"))), Some(at("/a/events?ack=1")));
    }
}
