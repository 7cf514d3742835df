//! WAL checkpoints off the event path. SQLite's automatic checkpoint runs inside whichever
//! commit takes the WAL past 1000 pages (4 MiB), and its fsync can take hundreds of
//! milliseconds on a busy disk: the channel loop would wait that long before its next poll.
//! This thread, on a connection of its own, runs a PASSIVE checkpoint (which never blocks the
//! writer) every interval, and a last one when the store is dropped. At any ordinary event
//! rate it copies everything and the WAL starts over before it reaches the automatic
//! threshold, so commits never checkpoint. Under a sustained flood a passive checkpoint never
//! catches up with the writer (the WAL would grow without end): there the automatic
//! checkpoint, left on, is the bound, and it finds most pages already copied.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Stops the thread (after a last checkpoint) when dropped.
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, every: Duration) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("ucwa-checkpoint".into()).spawn(move || loop {
            let last = !matches!(stopped.recv_timeout(every), Err(mpsc::RecvTimeoutError::Timeout));
            if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(%error, "WAL checkpoint failed; the next one retries");
            }
            if last {
                break;
            }
        });
        if let Err(e) = spawned {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        }
        Ok(Checkpointer { _stop: stop })
    }
}
