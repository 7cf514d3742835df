//! WAL checkpoints off the event path. A checkpoint copies the WAL into the database and
//! fsyncs both, and on a busy disk the fsyncs take milliseconds each: run on the writer's
//! thread, they held the channel loop back from its next poll (under a flood, about a quarter
//! of its time went to waiting for them: BENCHMARKS.md, "Checkpoints off the writer").
//!
//! This thread, on a connection of its own, runs a PASSIVE checkpoint (which never blocks the
//! writer):
//! - every interval, for a store written to since the last one;
//! - at once when a writer's WAL has grown by `KICK_PAGES` since it last asked (`watch`, the
//!   WAL hook of the store's connection, wakes it), so under a flood the WAL's pages are
//!   copied and synced here while the writer goes on.
//!
//! At any ordinary event rate it copies everything and the WAL starts over before it reaches
//! `BOUND_PAGES`. Under a sustained flood a passive checkpoint never quite catches up with the
//! writer (the WAL starts over only once every frame in it is copied), so the writer's own
//! checkpoint at `BOUND_PAGES` is the bound, as SQLite's automatic checkpoint (which the hook
//! replaces) was; it finds most pages already copied and synced.
//!
//! One thread serves every store of the process (an agent of a thousand accounts has a
//! thousand databases), and a store that did not use its connection since its last turn is
//! skipped; while no store is used at all, the thread does not walk them. The thread's
//! connection is opened only once the WAL file has grown past `WAL_MIN` (a quarter of
//! SQLite's own threshold), for one checkpoint: an account with little traffic never holds a
//! second connection (about 60 KiB), a busy one holds it for the checkpoint only, and SQLite checkpoints a small
//! WAL itself when the store closes. (The connection pool closes idle stores without that
//! checkpoint, `pool::close`: their WAL waits here until it passes `WAL_MIN`.)

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The WAL size past which the checkpointer steps in (SQLite's automatic checkpoint: 4 MiB).
pub(crate) const WAL_MIN: u64 = 1 << 20;

/// How many pages a writer's WAL grows by before it wakes the thread (1 MiB of 4 KiB pages:
/// `WAL_MIN`, so the thread finds it worth opening).
const KICK_PAGES: i32 = 256;

/// The WAL pages past which the writer checkpoints itself: SQLite's automatic checkpoint and
/// its default (about 4 MiB), the bound on the WAL when this thread cannot keep up.
pub(crate) const BOUND_PAGES: i32 = 1000;

struct Entry {
    path: PathBuf,
    wal_min: u64,
    every: Duration,
    due: Instant,
    /// Set by the store whenever it uses its connection; an untouched database is not asked.
    touched: Arc<AtomicBool>,
    /// Set by the store's WAL hook: its WAL is growing fast, checkpoint it now (`Kick`).
    kicked: Arc<AtomicBool>,
}

impl Entry {
    /// A PASSIVE checkpoint, once the WAL has grown past `wal_min`, on a connection opened for
    /// it and closed after it: an account's connections stay within `state.open_databases`
    /// (`pool`), and this one costs as much as the store's.
    fn checkpoint(&self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
        if size == 0 || size < self.wal_min {
            return;
        }
        let conn = match Connection::open(&self.path).and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|()| c)) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, db = %self.path.display(), "cannot open the database for a WAL checkpoint; the next turn retries");
                return;
            }
        };
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "WAL checkpoint failed; the next one retries");
        }
    }
}

static ENTRIES: Mutex<Vec<Arc<Mutex<Entry>>>> = Mutex::new(Vec::new());
/// Set after an entry's `touched` or `kicked`: some store may want a checkpoint, so the thread
/// walks its entries. An agent of thousands of idle accounts touches none for minutes, and
/// the walk over all of them each second was the largest single item of its idle profile.
static PENDING: AtomicBool = AtomicBool::new(false);
static THREAD: std::sync::Once = std::sync::Once::new();
/// Set, with `WAKE` notified, when a store's WAL hook asks for a checkpoint now.
static WOKEN: Mutex<bool> = Mutex::new(false);
static WAKE: Condvar = Condvar::new();

/// What a store's WAL hook holds to wake the thread for its database.
#[derive(Clone)]
pub(crate) struct Kick {
    kicked: Arc<AtomicBool>,
}

impl Kick {
    /// One that wakes nothing (tests of the writer's own bound).
    #[cfg(test)]
    pub(crate) fn detached() -> Kick {
        Kick { kicked: Arc::new(AtomicBool::new(false)) }
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::Relaxed);
        PENDING.store(true, Ordering::Release);
        *lock(&WOKEN) = true;
        WAKE.notify_one();
    }
}

/// Sets `conn`'s WAL hook, which SQLite calls after each commit with the pages in the WAL: it
/// wakes the thread each time the WAL has grown by `KICK_PAGES`, and checkpoints on the
/// writer's own thread past `BOUND_PAGES`, as the automatic checkpoint it replaces did.
pub(crate) fn watch(conn: &mut Connection, kick: Kick) -> rusqlite::Result<()> {
    // The WAL's pages when the thread was last woken (fewer now: the WAL started over).
    let mut asked = 0;
    conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::os::raw::c_int| {
        if pages < asked {
            asked = 0;
        }
        if pages >= BOUND_PAGES {
            // Busy (the thread is checkpointing) or not: the next commit asks again.
            if let Err(error) = wal.checkpoint() {
                tracing::debug!(%error, pages, "the writer's WAL checkpoint did not run");
            }
        } else if pages >= asked + KICK_PAGES {
            asked = pages;
            kick.kick();
        }
        // (An error here would fail the statement whose commit has already happened.)
        Ok(())
    }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops checkpointing the database when dropped.
pub(crate) struct Checkpointer {
    entry: Arc<Mutex<Entry>>,
    touched: Arc<AtomicBool>,
    kicked: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, every: Duration, wal_min: u64) -> rusqlite::Result<Checkpointer> {
        let touched = Arc::new(AtomicBool::new(true));
        let kicked = Arc::new(AtomicBool::new(false));
        let entry = Arc::new(Mutex::new(Entry {
            path: path.to_path_buf(),
            wal_min,
            every,
            due: Instant::now() + every,
            touched: touched.clone(),
            kicked: kicked.clone(),
        }));
        lock(&ENTRIES).push(entry.clone());
        PENDING.store(true, Ordering::Release);
        let mut failed = None;
        THREAD.call_once(|| {
            if let Err(e) = std::thread::Builder::new().name("ucwa-checkpoint".into()).spawn(run) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
        }
        Ok(Checkpointer { entry, touched, kicked })
    }

    /// The store used its connection (it may have written): check it at the next turn.
    pub(crate) fn touch(&self) {
        self.touched.store(true, Ordering::Relaxed);
        // (After the entry's flag: the thread clears this one before it reads theirs.)
        PENDING.store(true, Ordering::Release);
    }

    /// What the store's connections' WAL hook wakes this database's checkpoint with (`watch`).
    pub(crate) fn kick(&self) -> Kick {
        Kick { kicked: self.kicked.clone() }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&ENTRIES).retain(|e| !Arc::ptr_eq(e, &self.entry));
        // Waits for a checkpoint under way. The store's own connection, closing last,
        // checkpoints what is left of the WAL itself.
        drop(lock(&self.entry));
    }
}

/// The thread: each database at its own interval (the shortest sets the tick), and at once
/// when its WAL hook wakes it.
fn run() {
    let mut tick = Duration::from_secs(1);
    loop {
        // Only when a store was used (or kicked) since the last walk, or one used before its
        // turn is still waiting for it.
        if PENDING.swap(false, Ordering::AcqRel) {
            let entries: Vec<Arc<Mutex<Entry>>> = lock(&ENTRIES).clone();
            tick = Duration::from_secs(1);
            let now = Instant::now();
            let mut waiting = false;
            for e in entries {
                let mut e = lock(&e);
                tick = tick.min(e.every);
                if e.kicked.swap(false, Ordering::Relaxed) {
                    e.checkpoint();
                } else if e.due <= now {
                    if e.touched.swap(false, Ordering::Relaxed) {
                        e.checkpoint();
                    }
                    e.due = now + e.every;
                } else if e.touched.load(Ordering::Relaxed) {
                    waiting = true;
                }
            }
            if waiting {
                PENDING.store(true, Ordering::Release);
            }
        }
        let woken = lock(&WOKEN);
        let (mut woken, _) = WAKE.wait_timeout_while(woken, tick.max(Duration::from_millis(10)), |w| !*w).unwrap_or_else(|p| p.into_inner());
        *woken = false;
    }
}
