//! WAL checkpoints off the event path. SQLite's automatic checkpoint runs inside whichever
//! commit takes the WAL past 1000 pages (4 MiB), and its fsync can take hundreds of
//! milliseconds on a busy disk: the channel loop would wait that long before its next poll.
//! This thread, on a connection of its own, runs a PASSIVE checkpoint (which never blocks the
//! writer) every interval, and a last one when the store is dropped. At any ordinary event
//! rate it copies everything and the WAL starts over before it reaches the automatic
//! threshold, so commits never checkpoint. Under a sustained flood a passive checkpoint never
//! catches up with the writer (the WAL would grow without end): there the automatic
//! checkpoint, left on, is the bound, and it finds most pages already copied.

//!
//! One thread serves every store of the process (an agent of a thousand accounts has a
//! thousand databases), and a database that nothing wrote to since its last checkpoint is
//! skipped (`PRAGMA data_version` tells, without I/O). The connection is opened only once the
//! WAL file has grown past `WAL_MIN` (a quarter of SQLite's own threshold), and closed again
//! after each checkpoint: an account with little traffic never holds a second connection
//! (about 60 KiB), a busy one holds it for the checkpoint only, and SQLite checkpoints a small
//! WAL itself when the store closes. (The connection pool closes idle stores without that
//! checkpoint, `pool::close`: their WAL waits here until it passes `WAL_MIN`.)

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The WAL size past which the checkpointer steps in (SQLite's automatic checkpoint: 4 MiB).
pub(crate) const WAL_MIN: u64 = 1 << 20;

struct Entry {
    path: PathBuf,
    /// Opened once the WAL has grown past `wal_min`.
    conn: Option<Connection>,
    wal_min: u64,
    every: Duration,
    due: Instant,
    /// `data_version` at the last checkpoint: unchanged means nothing was written since.
    seen: Option<i64>,
    /// Set by the store whenever it uses its connection; an untouched database is not asked.
    touched: Arc<std::sync::atomic::AtomicBool>,
}

impl Entry {
    /// Checkpoints if anything was written since the last time; `force`: whatever the WAL's size.
    fn checkpoint(&mut self, force: bool) {
        if self.conn.is_none() {
            let mut wal = self.path.clone().into_os_string();
            wal.push("-wal");
            let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
            if size == 0 || (size < self.wal_min && !force) {
                return;
            }
            match Connection::open(&self.path).and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|()| c)) {
                Ok(c) => self.conn = Some(c),
                Err(error) => {
                    tracing::warn!(%error, db = %self.path.display(), "cannot open the database for a WAL checkpoint; the next turn retries");
                    return;
                }
            }
        }
        let Some(conn) = &self.conn else { return };
        let version = conn.prepare_cached("PRAGMA data_version").and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0))).ok();
        if version.is_some() && version == self.seen {
            return;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => self.seen = version,
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; the next one retries"),
        }
        if !force {
            // Not held between checkpoints: an account's connections stay within
            // `state.open_databases` (`pool`), and this one costs as much as the store's.
            self.conn = None;
            self.seen = None;
        }
    }
}

static ENTRIES: Mutex<Vec<Arc<Mutex<Entry>>>> = Mutex::new(Vec::new());
static THREAD: std::sync::Once = std::sync::Once::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops checkpointing the database (after a last checkpoint) when dropped.
pub(crate) struct Checkpointer {
    entry: Arc<Mutex<Entry>>,
    touched: Arc<std::sync::atomic::AtomicBool>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, every: Duration, wal_min: u64) -> rusqlite::Result<Checkpointer> {
        let touched = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let entry = Arc::new(Mutex::new(Entry {
            path: path.to_path_buf(),
            conn: None,
            wal_min,
            every,
            due: Instant::now() + every,
            seen: None,
            touched: touched.clone(),
        }));
        lock(&ENTRIES).push(entry.clone());
        let mut failed = None;
        THREAD.call_once(|| {
            if let Err(e) = std::thread::Builder::new().name("ucwa-checkpoint".into()).spawn(run) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        }
        Ok(Checkpointer { entry, touched })
    }

    /// The store used its connection (it may have written): check it at the next turn.
    pub(crate) fn touch(&self) {
        self.touched.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&ENTRIES).retain(|e| !Arc::ptr_eq(e, &self.entry));
        // Only if it was needed while running: otherwise the store's own connection, closing
        // last, checkpoints the small WAL itself.
        let mut e = lock(&self.entry);
        if e.conn.is_some() {
            e.checkpoint(true);
        }
    }
}

/// The thread: each database at its own interval (the shortest sets the tick).
fn run() {
    loop {
        let entries: Vec<Arc<Mutex<Entry>>> = lock(&ENTRIES).clone();
        let mut tick = Duration::from_secs(1);
        let now = Instant::now();
        for e in entries {
            let mut e = lock(&e);
            tick = tick.min(e.every);
            if e.due <= now && e.touched.swap(false, std::sync::atomic::Ordering::Relaxed) {
                e.checkpoint(false);
                e.due = now + e.every;
            }
        }
        std::thread::sleep(tick.max(Duration::from_millis(10)));
    }
}
