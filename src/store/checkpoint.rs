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
//! skipped (`PRAGMA data_version` tells, without I/O).

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    conn: Connection,
    every: Duration,
    due: Instant,
    /// `data_version` at the last checkpoint: unchanged means nothing was written since.
    seen: Option<i64>,
    /// Set by the store whenever it uses its connection; an untouched database is not asked.
    touched: Arc<std::sync::atomic::AtomicBool>,
}

impl Entry {
    fn checkpoint(&mut self) {
        let version = self.conn.prepare_cached("PRAGMA data_version").and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0))).ok();
        if version.is_some() && version == self.seen {
            return;
        }
        match self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => self.seen = version,
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; the next one retries"),
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
    pub(crate) fn start(path: &Path, every: Duration) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let touched = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let entry = Arc::new(Mutex::new(Entry { conn, every, due: Instant::now() + every, seen: None, touched: touched.clone() }));
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
        lock(&self.entry).checkpoint();
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
                e.checkpoint();
                e.due = now + e.every;
            }
        }
        std::thread::sleep(tick.max(Duration::from_millis(10)));
    }
}
