//! A bound on the SQLite connections the process holds open (`state.open_databases`). Each
//! account keeps its own database file (`<state.dir>/<account>/agent.db`), but an open
//! connection costs about 100–200 KiB (its lookaside, schema and statement caches, the pages
//! it touched) and three files (`agent.db`, `-wal`, `-shm`): 10,000 idle accounts would hold
//! 2 GiB and 30,000 files for nothing. So a store holds its connection only while it is among
//! the `open_databases` most recently used; past that, the least recently used idle one is
//! closed, and that store opens its database again at its next use (a batch, a commit, a read).
//!
//! The pool closes a connection without the checkpoint SQLite would run at the close of the
//! last connection to a WAL database (`close`); the checkpoint thread keeps the WAL bounded. A
//! store whose connection is in use is never chosen (`try_lock`); a store in memory is never
//! closed (it would lose its data).

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// `state.open_databases` by default (BENCHMARKS.md, "One connection pool for every account's
/// database"): 64 connections are about 10 MiB and 192 files whatever the number of accounts,
/// while the stores in use at any one moment are a handful (they are used from the Lua workers
/// and the runtime's threads, one per CPU each), so the accounts that had events in the last
/// moments keep theirs. A reopen (open, the schema read at the first statement) costs well
/// under a millisecond, next to the batch or commit that needs it.
pub const DEFAULT_OPEN: usize = 64;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_OPEN);
/// Ticks of use, to find the least recently used connection.
static CLOCK: AtomicU64 = AtomicU64::new(0);
/// The stores whose connection is open (a dropped store's entry is cleared at the next open).
static OPEN: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

/// Sets how many connections the process holds open at most (at least 1).
pub fn configure(open: usize) {
    LIMIT.store(open.max(1), Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the store sets on each connection it opens beyond `reopen`'s settings (its WAL hook).
pub(super) type Setup = Box<dyn Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync>;

/// One store's connection, open or not.
pub(super) struct Slot {
    path: PathBuf,
    pub(super) conn: Mutex<Option<Connection>>,
    used: AtomicU64,
    /// Applied to the connection when it is opened again.
    setup: Option<Setup>,
}

impl Slot {
    /// `conn` already set up. `pooled` false: a database in memory, never closed (its
    /// connection is its data).
    pub(super) fn new(path: &Path, conn: Connection, pooled: bool, setup: Option<Setup>) -> Arc<Slot> {
        let slot = Arc::new(Slot { path: path.to_path_buf(), conn: Mutex::new(Some(conn)), used: AtomicU64::new(0), setup });
        slot.used();
        if pooled {
            admit(&slot);
        }
        slot
    }

    /// The connection, opened again if the pool closed it. The file must exist: a database
    /// removed while the agent runs is an error, not a new empty one.
    pub(super) fn hold(self: &Arc<Slot>) -> rusqlite::Result<std::sync::MutexGuard<'_, Option<Connection>>> {
        let mut conn = lock(&self.conn);
        self.used();
        if conn.is_none() {
            let mut opened = reopen(&self.path)?;
            if let Some(setup) = &self.setup {
                setup(&mut opened)?;
            }
            *conn = Some(opened);
            admit(self);
        }
        Ok(conn)
    }

    fn used(&self) {
        self.used.store(CLOCK.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// What a connection set at `Store::open` (WAL mode is the file's own) is set to again.
fn reopen(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Counts `slot`'s open connection in, closing the least recently used idle ones past the limit.
/// The caller holds `slot`'s connection: it is never the one closed.
fn admit(slot: &Arc<Slot>) {
    let mut closing = Vec::new();
    {
        let mut open = lock(&OPEN);
        open.retain(|w| w.strong_count() > 0);
        if !open.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(slot))) {
            open.push(Arc::downgrade(slot));
        }
        let limit = LIMIT.load(Ordering::Relaxed);
        if open.len() > limit {
            // Oldest first; one in use (its lock taken) is passed over, so at worst the pool
            // stays over its limit until a later open finds them idle.
            let mut order: Vec<(u64, usize)> = open.iter().enumerate().filter_map(|(i, w)| w.upgrade().map(|s| (s.used.load(Ordering::Relaxed), i))).collect();
            order.sort_unstable();
            let mut gone = Vec::new();
            for (_, i) in order {
                if open.len() - gone.len() <= limit {
                    break;
                }
                let Some(s) = open[i].upgrade() else { continue };
                if Arc::ptr_eq(&s, slot) {
                    continue;
                }
                let Ok(mut conn) = s.conn.try_lock() else { continue };
                closing.extend(conn.take());
                gone.push(i);
            }
            gone.sort_unstable();
            for i in gone.into_iter().rev() {
                open.swap_remove(i);
            }
        }
    }
    for conn in closing {
        close(conn);
    }
}

/// Closes an idle connection without the checkpoint SQLite runs when the last connection to a
/// WAL database closes: that checkpoint's fsyncs (milliseconds each on a busy disk) would
/// land on the event path of the account that needed the slot, every time. What it leaves in
/// the WAL is committed (a reader or the next open reads it there); the checkpoint thread
/// copies it once the WAL passes `checkpoint::WAL_MIN`, and the store's own close (the agent
/// stopping, the account removed) checkpoints as before.
fn close(conn: Connection) {
    if let Err(error) = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true) {
        tracing::debug!(%error, "cannot skip the checkpoint at close; the close checkpoints");
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing an idle account's database failed");
    }
}

/// Closes `slot`'s connection now, as the pool does to an idle one (tests); whether it was open.
#[cfg(test)]
pub(super) fn close_now(slot: &Slot) -> bool {
    let conn = lock(&slot.conn).take();
    lock(&OPEN).retain(|w| !std::ptr::eq(w.as_ptr(), slot));
    let open = conn.is_some();
    conn.into_iter().for_each(close);
    open
}
