//! WAL checkpoints off the event path. SQLite's automatic checkpoint runs inside whichever
//! commit crosses the threshold, and its fsync can take hundreds of milliseconds on a busy
//! disk: the channel loop would wait that long before its next poll. Instead the agent's own
//! connection never checkpoints (`wal_autocheckpoint = 0`) and this thread, on a connection of
//! its own, runs a PASSIVE checkpoint (which never blocks the writer) every interval, and a
//! last one when the store is dropped.

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
