//! The store itself: one account's SQLite database (`<state.dir>/agent.db`, WAL), its tables
//! as `mod.rs` lists them, and what the agent reads and writes there.

pub use super::position::Position;
use crate::ucwa::{batch, Event, Origin};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("state database {path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

pub struct Store {
    path: PathBuf,
    /// Open while among the process's most recently used (`pool`), opened again at need.
    slot: Arc<super::pool::Slot>,
    /// WAL checkpoints on a thread of their own (none for a database in memory).
    _checkpointer: Option<super::checkpoint::Checkpointer>,
    /// What `journal_figures` last read, until the connection is next taken: a scrape of
    /// `/metrics` does not open every idle account's database again.
    figures: std::sync::Mutex<Option<JournalFigures>>,
    /// The channel position of empty batches that came while the pool had the database closed
    /// (`append`): written when the database is next opened. Only ever set while the
    /// connection is closed, under its lock, so nothing newer can have been written meanwhile.
    deferred_position: std::sync::Mutex<Option<Position>>,
    /// After a read failed to write the deferred position (a locked database waits out the 5 s
    /// busy timeout each time), reads do not try again before this; writes always do.
    deferred_retry: std::sync::Mutex<Option<std::time::Instant>>,
    /// The position the database holds: its `next` is what `position::write` builds on, and a
    /// batch's `next` goes into its journal row only after a position of the same application
    /// (`append`).
    db_position: std::sync::Mutex<Option<Position>>,
    /// The directory of `position.json` (none for a database in memory, never closed).
    dir: Option<PathBuf>,
}

/// The journal's head and depth and each script's cursor, as `/metrics` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalFigures {
    pub head: u64,
    pub depth: u64,
    pub cursors: Vec<(String, Option<u64>)>,
}

/// How often the WAL is copied into the database (and its fsync done), off the event path.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, origin TEXT NOT NULL, body BLOB NOT NULL, codec INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cursors (script TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS script_state (script TEXT PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state_keys (script TEXT NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (script, key));
CREATE TABLE IF NOT EXISTS watches (script TEXT NOT NULL, uri TEXT NOT NULL, PRIMARY KEY (script, uri));
";

/// What `upgrade` brings a database to (`PRAGMA user_version`): 1 added `traces`, 2 the
/// journal's `next`.
const SCHEMA_VERSION: i64 = 2;

/// Schema version 1: the traces of scripts' runs.
const TRACES: &str = "
CREATE TABLE IF NOT EXISTS traces (id INTEGER PRIMARY KEY, script TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL, body BLOB NOT NULL, codec INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS traces_by_script ON traces (script, id);
";

/// How long reads leave a deferred position alone after failing to write it (`Store::read`).
const DEFERRED_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The most bytes of traces (as JSON) kept per script: 1 MiB, whatever
/// `scripts.traces_per_script` says.
pub const TRACES_MAX_BYTES: u64 = 1 << 20;

/// The traces one commit writes for a script: JSON, one per line.
#[derive(Debug, Default)]
pub struct TraceChunk {
    pub lines: String,
    pub n: usize,
    /// The lowest and highest event seq among them (0 when none is about an event).
    pub first_seq: u64,
    pub last_seq: u64,
    pub at_ms: i64,
    /// How many of the script's traces to keep (`scripts.traces_per_script`).
    pub keep: usize,
}

/// Which traces to read.
#[derive(Debug, Default, Clone)]
pub struct TraceQuery {
    pub script: Option<String>,
    pub seq: Option<u64>,
    /// At most this many, the newest (0: no limit).
    pub limit: usize,
}

/// The store's connection while held. Let go, it tells the checkpointer the database may have
/// changed: after the work, so a checkpoint that ran meanwhile cannot have missed it.
pub(super) struct Held<'a> {
    conn: std::sync::MutexGuard<'a, Option<Connection>>,
    checkpointer: Option<&'a super::checkpoint::Checkpointer>,
}

impl std::ops::Deref for Held<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("a held connection is open")
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("a held connection is open")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.checkpointer {
            c.touch();
        }
    }
}

impl Drop for Store {
    /// An account removed (or its agent stopping without a graceful end) keeps the position
    /// it last had.
    fn drop(&mut self) {
        if self.deferred_position.get_mut().map(|d| d.is_some()).unwrap_or(false) {
            if let Err(error) = self.lock() {
                tracing::warn!(%error, "cannot write the channel position kept in memory");
            }
        }
    }
}

/// The position the database holds: `meta`'s, with the `next` of the newest journal row
/// written after it (`position::Saved`). One statement, so one snapshot: a reader in another
/// process never pairs `meta` with rows a prune has since deleted. A database not yet
/// upgraded (read by `state export`) has no `next` in its rows.
pub(super) fn position_in(conn: &Connection) -> rusqlite::Result<Option<Position>> {
    let sql = if journal_has_next(conn)? {
        "SELECT value, (SELECT next FROM journal WHERE next IS NOT NULL \
                AND first_seq > COALESCE(CASE WHEN json_valid(meta.value) THEN CAST(json_extract(meta.value, '$.head') AS INTEGER) END, 0) \
                ORDER BY first_seq DESC LIMIT 1) \
         FROM meta WHERE key = 'position'"
    } else {
        "SELECT value, NULL FROM meta WHERE key = 'position'"
    };
    let row: Option<(String, Option<String>)> = conn.prepare_cached(sql)?.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    Ok(row.and_then(|(text, next)| {
        let mut p = serde_json::from_str::<super::position::Saved<Position>>(&text).ok()?.position;
        if let Some(next) = next {
            p.next = next;
        }
        Some(p)
    }))
}

/// Whether the journal has schema version 2's `next` column.
fn journal_has_next(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM pragma_table_info('journal') WHERE name = 'next'")?.exists([])
}

/// Writes `p` as `meta`'s position, after the journal's rows up to `head`: their `next`s no
/// longer count.
pub(super) fn write_position(conn: &Connection, p: &Position, head: i64) -> rusqlite::Result<()> {
    let text = serde_json::to_string(&super::position::Saved { position: p, head: head as u64 }).expect("positions serialize");
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('position', ?1)")?.execute(params![text])?;
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The part of a script's `agent.state` a commit writes.
#[derive(Debug, Default)]
pub struct StateWrite<'a> {
    /// Every stored key of the script goes first (the keys in `set` are then all there is).
    pub replace_all: bool,
    /// Top-level keys and their values as JSON.
    pub set: &'a [(String, String)],
    pub removed: &'a [String],
}

impl Store {
    /// Opens (creating) `<dir>/agent.db`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, CHECKPOINT_EVERY, super::checkpoint::WAL_MIN)
    }

    /// `wal_min`: the WAL size past which the checkpoint thread takes over (see `checkpoint`).
    fn open_with(dir: &Path, checkpoint_every: std::time::Duration, wal_min: u64) -> Result<Store, StoreError> {
        let path = dir.join("agent.db");
        let err = |source| StoreError { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let mut conn = Connection::open(&path).map_err(err)?;
        // WAL + NORMAL: a commit survives the process being killed (the test of issue 3); only
        // an OS crash can lose the last commits.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        upgrade(&conn).map_err(err)?;
        // A database that opens but cannot be written (read-only file or directory) would let
        // the agent sign in and then fail every batch: find out now.
        conn.execute_batch("BEGIN IMMEDIATE; INSERT OR REPLACE INTO meta (key, value) VALUES ('opened', datetime('now')); COMMIT;").map_err(err)?;
        let db_position = position_in(&conn).map_err(err)?;
        let checkpointer = super::checkpoint::Checkpointer::start(&path, checkpoint_every, wal_min).map_err(err)?;
        // Checkpoints are the thread's (`checkpoint`): the connection's WAL hook wakes it.
        let kick = checkpointer.kick();
        let setup: super::pool::Setup = Box::new(move |c| super::checkpoint::watch(c, kick.clone()));
        setup(&mut conn).map_err(err)?;
        let slot = super::pool::Slot::new(&path, conn, true, Some(setup));
        Ok(Store {
            path,
            slot,
            _checkpointer: Some(checkpointer),
            figures: Default::default(),
            deferred_position: Default::default(),
            deferred_retry: Default::default(),
            db_position: std::sync::Mutex::new(db_position),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// A database that lives in memory (replay, tests of the script host).
    pub fn in_memory() -> Store {
        let conn = Connection::open_in_memory().expect("SQLite opens in memory");
        conn.execute_batch(SCHEMA).expect("the schema applies");
        upgrade(&conn).expect("the schema upgrades");
        let path = PathBuf::from(":memory:");
        Store {
            slot: super::pool::Slot::new(&path, conn, false, None),
            path,
            _checkpointer: None,
            figures: Default::default(),
            deferred_position: Default::default(),
            deferred_retry: Default::default(),
            db_position: Default::default(),
            dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError { path: self.path.clone(), source }
    }

    /// The store's connection, opened again if the pool closed it since its last use, to
    /// write with: a position kept out of the database (`defer_position`) is written first,
    /// and if that fails so does this (what the caller writes may be a newer position).
    pub(super) fn lock(&self) -> Result<Held<'_>, StoreError> {
        self.hold(true)
    }

    /// The store's connection to read with: a kept position that cannot be written yet (a
    /// full disk, a locked database) stays kept, in memory and in `position.json`, and the
    /// read goes on (`position` reads it from there).
    pub(super) fn read(&self) -> Result<Held<'_>, StoreError> {
        self.hold(false)
    }

    fn hold(&self, to_write: bool) -> Result<Held<'_>, StoreError> {
        // Whatever is done with it may change the figures.
        *self.figures.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let conn = self.slot.hold().map_err(|e| self.err(e))?;
        let held = Held { conn, checkpointer: self._checkpointer.as_ref() };
        let mut deferred = self.deferred_position.lock().unwrap_or_else(|p| p.into_inner());
        let later = !to_write && lock(&self.deferred_retry).is_some_and(|at| std::time::Instant::now() < at);
        if let Some(p) = deferred.take_if(|_| !later) {
            // Before whatever the caller writes, which may be a newer position; after every
            // journal row (it came with an empty batch after them).
            if let Err(e) = head_in(&held).and_then(|head| write_position(&held, &p, head)) {
                *deferred = Some(p);
                if to_write {
                    return Err(self.err(e));
                }
                tracing::warn!(db = %self.path.display(), error = %e, "cannot write the channel position kept in memory yet; it stays there and in position.json");
                *lock(&self.deferred_retry) = Some(std::time::Instant::now() + DEFERRED_RETRY);
                drop(deferred);
                return Ok(held);
            }
            *lock(&self.deferred_retry) = None;
            *lock(&self.db_position) = Some(p);
        }
        drop(deferred);
        Ok(held)
    }

    /// Keeps the position of an empty batch out of the database if the pool has closed it
    /// (`position`: an idle account's long poll returns empty every few minutes, and opening
    /// its database for each was most of what 10,000 idle accounts cost; BENCHMARKS.md, "An
    /// idle account's position"): in memory, written into the database at its next use, and in
    /// `position.json` beside it, which a restart after a SIGKILL resumes from. Whether it was
    /// kept so.
    fn defer_position(&self, p: &Position) -> bool {
        let Some(dir) = &self.dir else { return false };
        let conn = lock(&self.slot.conn);
        if conn.is_some() {
            return false;
        }
        super::position::write(dir, lock(&self.db_position).as_ref().map(|d| d.next.as_str()), p);
        *lock(&self.deferred_position) = Some(p.clone());
        true
    }

    /// Appends a response body (`events` are what it decodes to; they get their `seq` here)
    /// and, in the same transaction, the new channel position: with events, after a position
    /// of the same application, only its `next`, in the batch's own row (one b-tree written
    /// per commit, not the journal's and `meta`'s); else the whole position in `meta`.
    pub fn append(&self, origin: &Origin, body: &[u8], events: &mut [Event], position: Option<&Position>) -> Result<(), StoreError> {
        if let (true, Some(p)) = (events.is_empty(), position) {
            if self.defer_position(p) {
                return Ok(());
            }
        }
        if events.is_empty() {
            return self.commit_batch(origin, None, events, position);
        }
        // Compressed before taking the lock: the scripts' commits share the connection.
        compressed(body, |stored| self.commit_batch(origin, Some(stored), events, position))
    }

    /// `append`'s transaction: the batch's row (its body `stored`, compressed) and the position.
    fn commit_batch(&self, origin: &Origin, stored: Option<&[u8]>, events: &mut [Event], position: Option<&Position>) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        // (Read after `lock`, which may have written a deferred position.)
        let in_row = position.filter(|p| stored.is_some() && lock(&self.db_position).as_ref().is_some_and(|d| d.same_application(p)));
        // IMMEDIATE: it reads the head before it writes, and a transaction that began reading
        // is refused at once (SQLITE_BUSY, no busy timeout) if another connection holds the
        // write lock when it comes to write, as one recovering the WAL index does for a moment.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        if let Some(stored) = stored {
            let head = head_in(&tx).map_err(|e| self.err(e))?;
            let (first, last) = (head + 1, head + events.len() as i64);
            let next = in_row.map(|p| p.next.as_str());
            tx.prepare_cached("INSERT INTO journal (first_seq, last_seq, origin, body, codec, next) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .and_then(|mut st| st.execute(params![first, last, origin.as_str(), stored, CODEC_LZ4, next]))
                .map_err(|e| self.err(e))?;
            for (i, ev) in events.iter_mut().enumerate() {
                ev.seq = (first + i as i64) as u64;
            }
        }
        if let Some(p) = position.filter(|_| in_row.is_none()) {
            head_in(&tx).and_then(|head| write_position(&tx, p, head)).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        if let Some(p) = position {
            // (The connection still held: a deferral cannot come between.)
            let mut db = lock(&self.db_position);
            match db.as_mut() {
                Some(d) if in_row.is_some() => d.next.clone_from(&p.next),
                _ => *db = Some(p.clone()),
            }
        }
        Ok(())
    }

    /// Journal events after `seq`, in order (each stored body decoded again).
    pub fn events_after(&self, seq: u64) -> Result<Vec<Event>, StoreError> {
        self.journaled(seq, None)
    }

    /// Event `seq`, if the journal still holds it (its batch alone is read).
    pub fn event_at(&self, seq: u64) -> Result<Option<Event>, StoreError> {
        Ok(self.journaled(seq.saturating_sub(1), Some(seq))?.into_iter().find(|e| e.seq == seq))
    }

    /// The journaled events after `seq`, from the batches that start at or before `upto`.
    fn journaled(&self, seq: u64, upto: Option<u64>) -> Result<Vec<Event>, StoreError> {
        // (Seqs are i64 in SQLite: a larger one means "all" or "none", never a negative.)
        let as_sql = |s: u64| s.min(i64::MAX as u64) as i64;
        let conn = self.read()?;
        let mut q = conn
            .prepare_cached("SELECT first_seq, last_seq, origin, body, codec FROM journal WHERE last_seq > ?1 AND first_seq <= ?2 ORDER BY first_seq")
            .map_err(|e| self.err(e))?;
        let rows = q
            .query_map(params![as_sql(seq), as_sql(upto.unwrap_or(u64::MAX))], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, Vec<u8>>(3)?, r.get::<_, i64>(4)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (first, last, origin, stored, codec) = row.map_err(|e| self.err(e))?;
            let decoded = url::Url::parse(&origin)
                .map_err(|e| e.to_string())
                .and_then(|o| Ok((o, body_of(stored, codec)?)))
                .and_then(|(o, body)| batch::parse(&body, &Origin::of(&o)));
            let events = match decoded {
                Ok(b) if b.events.len() as i64 == last - first + 1 => b.events,
                Ok(b) => {
                    tracing::error!(
                        first_seq = first,
                        expected = last - first + 1,
                        got = b.events.len(),
                        "journal batch decodes to a different number of events; skipped"
                    );
                    continue;
                }
                Err(error) => {
                    tracing::error!(first_seq = first, %error, "unreadable journal batch skipped");
                    continue;
                }
            };
            for (i, mut ev) in events.into_iter().enumerate() {
                ev.seq = (first + i as i64) as u64;
                if ev.seq > seq {
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }

    /// The journal's head and depth and the cursors of `scripts`: read from the database only
    /// when it was used since the last time (the figures of an idle account are remembered).
    pub fn journal_figures(&self, scripts: &[String]) -> Result<JournalFigures, StoreError> {
        if let Some(f) = self.figures.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|f| f.cursors.iter().map(|(s, _)| s).eq(scripts.iter())) {
            return Ok(f.clone());
        }
        let (head, depth) = (self.head()?, self.depth()?);
        let cursors = scripts.iter().map(|s| Ok((s.clone(), self.cursor(s)?))).collect::<Result<Vec<_>, StoreError>>()?;
        let f = JournalFigures { head, depth, cursors };
        *self.figures.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
        Ok(f)
    }

    /// The highest `seq` ever journaled (0 for none).
    pub fn head(&self) -> Result<u64, StoreError> {
        let conn = self.read()?;
        Ok(head_in(&conn).map_err(|e| self.err(e))? as u64)
    }

    /// How many events the journal holds.
    pub fn depth(&self) -> Result<u64, StoreError> {
        let conn = self.read()?;
        let n: i64 = conn.query_row("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM journal", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    pub fn cursor(&self, script: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.read()?;
        conn.query_row("SELECT seq FROM cursors WHERE script = ?1", params![script], |r| r.get::<_, i64>(0))
            .optional()
            .map(|o| o.map(|s| s as u64))
            .map_err(|e| self.err(e))
    }

    /// Records that `script` finished every event up to `seq`, and what changed in its
    /// `agent.state`, atomically.
    pub fn commit_script(&self, script: &str, seq: Option<u64>, state: Option<&StateWrite<'_>>) -> Result<(), StoreError> {
        self.commit_script_with(script, seq, state, None)
    }

    /// `commit_script`, with the traces of the runs it commits (in the same transaction).
    pub fn commit_script_with(&self, script: &str, seq: Option<u64>, state: Option<&StateWrite<'_>>, traces: Option<&TraceChunk>) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if let Some(seq) = seq {
            tx.prepare_cached("INSERT OR REPLACE INTO cursors (script, seq) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(params![script, seq as i64]))
                .map_err(|e| self.err(e))?;
        }
        if let Some(w) = state {
            let run = || -> rusqlite::Result<()> {
                if w.replace_all {
                    tx.prepare_cached("DELETE FROM state_keys WHERE script = ?1")?.execute(params![script])?;
                    tx.prepare_cached("DELETE FROM script_state WHERE script = ?1")?.execute(params![script])?;
                }
                let mut del = tx.prepare_cached("DELETE FROM state_keys WHERE script = ?1 AND key = ?2")?;
                for k in w.removed {
                    del.execute(params![script, k])?;
                }
                let mut put = tx.prepare_cached("INSERT OR REPLACE INTO state_keys (script, key, json) VALUES (?1, ?2, ?3)")?;
                for (k, json) in w.set {
                    put.execute(params![script, k, json])?;
                }
                Ok(())
            };
            run().map_err(|e| self.err(e))?;
        }
        if let Some(t) = traces {
            add_traces(&tx, script, t).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes traces outside a commit (a stuck call, a script that could not load).
    pub fn add_traces(&self, script: &str, traces: &TraceChunk) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        add_traces(&tx, script, traces).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Traces as stored (JSON), oldest first.
    pub fn traces(&self, q: &TraceQuery) -> Result<Vec<String>, StoreError> {
        let conn = self.read()?;
        read_traces(&conn, q).map_err(|e| self.err(e))
    }

    /// A script's `agent.state` as saved: its top-level keys and their JSON, by key. A state
    /// saved whole by an earlier version comes back split into its keys.
    pub fn state(&self, script: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached("SELECT key, json FROM state_keys WHERE script = ?1 ORDER BY key").map_err(|e| self.err(e))?;
        let keys = st
            .query_map(params![script], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let whole: Option<String> =
            conn.query_row("SELECT json FROM script_state WHERE script = ?1", params![script], |r| r.get(0)).optional().map_err(|e| self.err(e))?;
        let Some(serde_json::Value::Object(map)) = whole.and_then(|j| serde_json::from_str(&j).ok()) else {
            return Ok(Vec::new());
        };
        Ok(map.into_iter().map(|(k, v)| (k, v.to_string())).collect())
    }

    /// Where the channel stands: the database's position, or the newer one `position.json`
    /// holds if the process that kept it in memory was killed before writing it there.
    pub fn position(&self) -> Result<Option<Position>, StoreError> {
        let conn = self.read()?;
        let in_db = position_in(&conn).map_err(|e| self.err(e))?;
        Ok(match &self.dir {
            Some(dir) => super::position::newest(dir, in_db),
            None => in_db,
        })
    }

    /// A new application's position (written whole, after every journal row: the rows' `next`s
    /// were another application's), or none (a graceful stop: rows alone make no position).
    pub fn save_position(&self, p: Option<&Position>) -> Result<(), StoreError> {
        let conn = self.lock()?;
        match p {
            Some(p) => head_in(&conn).and_then(|head| write_position(&conn, p, head)),
            None => conn.execute("DELETE FROM meta WHERE key = 'position'", []).map(|_| ()),
        }
        .map_err(|e| self.err(e))?;
        *lock(&self.db_position) = p.cloned();
        Ok(())
    }

    /// Adds `uris` (`sip:` URIs, as the script API normalised them) to what `script` watches.
    pub fn watch(&self, script: &str, uris: &[String]) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut put = tx.prepare_cached("INSERT OR IGNORE INTO watches (script, uri) VALUES (?1, ?2)").map_err(|e| self.err(e))?;
            for uri in uris {
                put.execute(params![script, uri]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Stops `script` watching `uris` (every contact it watches, for None).
    pub fn unwatch(&self, script: &str, uris: Option<&[String]>) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        match uris {
            None => tx.execute("DELETE FROM watches WHERE script = ?1", params![script]).map(|_| ()),
            Some(uris) => tx.prepare_cached("DELETE FROM watches WHERE script = ?1 AND uri = ?2").and_then(|mut del| {
                for uri in uris {
                    del.execute(params![script, uri])?;
                }
                Ok(())
            }),
        }
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// The contacts `scripts` watch (each once, sorted); every script's for None.
    pub fn watched(&self, scripts: Option<&[String]>) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached("SELECT script, uri FROM watches").map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().filter(|(s, _)| scripts.is_none_or(|names| names.contains(s))).map(|(_, uri)| uri).collect())
    }

    /// Deletes journal batches every one of `scripts` has passed (returns how many); keeps at most `max_rows` rows
    /// whatever the cursors say (a stalled script then misses the oldest: it is logged).
    pub fn prune(&self, scripts: &[String], max_rows: u64) -> Result<u64, StoreError> {
        let mut min: Option<u64> = None;
        for s in scripts {
            let c = self.cursor(s)?.unwrap_or(0);
            min = Some(min.map_or(c, |m| m.min(c)));
        }
        let head = self.head()?;
        let passed = min.unwrap_or(head);
        let floor = head.saturating_sub(max_rows);
        let upto = passed.max(floor);
        if floor > passed {
            tracing::warn!(kept = max_rows, dropped_before = upto, "journal over its size limit: a lagging script misses the oldest events");
        }
        let mut conn = self.lock()?;
        // The head is the journal's last row's, and so may be the position's `next`: both kept
        // in `meta` before that row may go.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let head = head_in(&tx).map_err(|e| self.err(e))?;
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?1)")
            .and_then(|mut st| st.execute(params![head.to_string()]))
            .map_err(|e| self.err(e))?;
        if let Some(p) = position_in(&tx).map_err(|e| self.err(e))? {
            write_position(&tx, &p, head).map_err(|e| self.err(e))?;
        }
        let n = tx.execute("DELETE FROM journal WHERE last_seq <= ?1", params![upto as i64]).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n as u64)
    }
}

/// The highest `seq` ever journaled (0 for none): the journal's last row, or what `meta`
/// kept of it when pruning emptied the journal (an append does not write `meta`: one page
/// fewer per commit).
pub(super) fn head_in(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT MAX(COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'head'), 0), \
                    COALESCE((SELECT last_seq FROM journal ORDER BY first_seq DESC LIMIT 1), 0))",
    )?
    .query_row([], |r| r.get(0))
}

thread_local! {
    /// `compressed`'s output, kept for the thread's next batch (a new one, zeroed, per batch
    /// was about 3 % of the producer's time).
    static COMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` of `body` LZ4-compressed with its size first (`CODEC_LZ4`, as `compress_prepend_size`
/// makes it), in a buffer the thread keeps (given back when a body made it over 1 MiB).
fn compressed<R>(body: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    COMPRESSED.with(|cell| {
        // (`f` never compresses: the borrow is the only one.)
        let mut buf = cell.borrow_mut();
        let max = 4 + lz4_flex::block::get_maximum_output_size(body.len());
        if buf.len() < max {
            buf.resize(max, 0);
        }
        let n = lz4_flex::block::compress_into(body, &mut buf[4..]).expect("the output holds the largest compressed size");
        buf[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let out = f(&buf[..4 + n]);
        if buf.len() > 1 << 20 {
            *buf = Vec::new();
        }
        out
    })
}

/// How a journal body is stored: 0 = as received (databases from before compression), 1 = LZ4
/// block with its size first.
pub(super) const CODEC_LZ4: i64 = 1;

/// No event-channel response is anywhere near this; a stored size above it means a damaged row.
const MAX_BODY: usize = 256 << 20;

/// A journal body as received, from its stored form.
pub(super) fn body_of(stored: Vec<u8>, codec: i64) -> Result<Vec<u8>, String> {
    match codec {
        0 => Ok(stored),
        CODEC_LZ4 => {
            let size = stored.get(..4).map_or(usize::MAX, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize);
            if size > MAX_BODY {
                return Err(format!("stored body claims {size} bytes"));
            }
            lz4_flex::decompress_size_prepended(&stored).map_err(|e| format!("stored body does not decompress: {e}"))
        }
        other => Err(format!("unknown body codec {other} (written by a newer ucwa-agent?)")),
    }
}

/// Brings a database written by an earlier version up to the current schema.
fn upgrade(conn: &Connection) -> rusqlite::Result<()> {
    let has_codec = conn.prepare("SELECT 1 FROM pragma_table_info('journal') WHERE name = 'codec'")?.exists([])?;
    if !has_codec {
        conn.execute_batch("ALTER TABLE journal ADD COLUMN codec INTEGER NOT NULL DEFAULT 0")?;
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        conn.execute_batch(&format!("BEGIN; {TRACES} PRAGMA user_version = 1; COMMIT;"))?;
    }
    if version < 2 {
        // Version 2: a batch's `next` in its journal row (`position_in`). A nullable column
        // added: SQLite rewrites no row, and every old row holds none.
        let add = if journal_has_next(conn)? { "" } else { "ALTER TABLE journal ADD COLUMN next TEXT;" };
        conn.execute_batch(&format!("BEGIN; {add} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))?;
    }
    Ok(())
}

/// A script's trace rows, for `add_traces`' pruning, put in order in Rust: SQLite prepares a
/// statement again at every run when its `ORDER BY` meets an equality on a bound parameter
/// (as the window query that pruned before did), about 200,000 instructions per commit on the
/// script's thread, more than the rest of the commit.
const TRACES_OF_SCRIPT: &str = "SELECT id, n, bytes FROM traces WHERE script = ?1";
const TRACES_PRUNE: &str = "DELETE FROM traces WHERE script = ?1 AND id <= ?2";
const TRACES_INSERT: &str = "INSERT INTO traces (script, first_seq, last_seq, at_ms, n, bytes, body, codec) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Appends a commit's traces and prunes the script's oldest ones: every row wholly past the
/// newest `keep` traces or the newest `TRACES_MAX_BYTES` goes (`keep` 0: all of them).
fn add_traces(tx: &Connection, script: &str, t: &TraceChunk) -> rusqlite::Result<()> {
    if t.keep > 0 && t.n > 0 {
        let body = lz4_flex::compress_prepend_size(t.lines.as_bytes());
        tx.prepare_cached(TRACES_INSERT)?.execute(params![
            script,
            t.first_seq as i64,
            t.last_seq as i64,
            t.at_ms,
            t.n as i64,
            t.lines.len() as i64,
            body,
            CODEC_LZ4
        ])?;
    }
    let mut rows = tx
        .prepare_cached(TRACES_OF_SCRIPT)?
        .query_map(params![script], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64, r.get::<_, i64>(2)?.max(0) as u64)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.sort_unstable_by_key(|&(id, _, _)| std::cmp::Reverse(id));
    // The newest row that the rows newer than it already cover (so do the older ones: the
    // sums only grow going back).
    let (mut n, mut bytes, mut cut) = (0u64, 0u64, None);
    for (id, rn, rbytes) in rows {
        if n >= t.keep as u64 || bytes >= TRACES_MAX_BYTES {
            cut = Some(id);
            break;
        }
        n += rn;
        bytes += rbytes;
    }
    if let Some(cut) = cut {
        tx.prepare_cached(TRACES_PRUNE)?.execute(params![script, cut])?;
    }
    Ok(())
}

/// The traces `q` asks for, oldest first. A database from before traces has none.
pub fn read_traces(conn: &Connection, q: &TraceQuery) -> rusqlite::Result<Vec<String>> {
    let has_table = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'traces'")?.exists([])?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare_cached(
        "SELECT body, codec FROM traces WHERE (?1 IS NULL OR script = ?1) AND (?2 IS NULL OR (first_seq <= ?2 AND last_seq >= ?2)) ORDER BY id DESC",
    )?;
    let seq = q.seq.map(|s| s as i64);
    let mut rows = st.query(params![q.script, seq])?;
    let mut out = Vec::new();
    let wanted = q.seq.map(|s| format!("\"event\":{{\"seq\":{s},"));
    'rows: while let Some(row) = rows.next()? {
        let Ok(body) = body_of(row.get(0)?, row.get(1)?) else {
            continue; // a damaged row: the others are still read
        };
        let body = String::from_utf8_lossy(&body);
        for line in body.lines().rev() {
            // (A trace's `seq` is the first member of its `event`: no parsing to filter.)
            if wanted.as_ref().is_some_and(|w| !line.contains(w.as_str())) {
                continue;
            }
            out.push(line.to_string());
            if q.limit > 0 && out.len() >= q.limit {
                break 'rows;
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// Opens a state directory's database to read only: from another process, while the agent
/// runs (WAL lets a reader in beside the writer) or after it stopped.
pub fn open_read_only(dir: &Path) -> Result<Connection, StoreError> {
    let path = dir.join("agent.db");
    let err = |source| StoreError { path: path.clone(), source };
    if !path.exists() {
        return Err(err(rusqlite::Error::InvalidPath(path.clone())));
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin() -> Origin {
        Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap())
    }

    fn append(s: &Store, body: &[u8], pos: Option<&Position>) -> Vec<u64> {
        let mut events = batch::parse(body, &origin()).unwrap().events;
        s.append(&origin(), body, &mut events, pos).unwrap();
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_body_is_stored_as_compress_prepend_size_stores_it_whatever_came_before() {
        // The thread's buffer is reused: a long body, then a short one, then an empty one.
        for body in [vec![b'x'; 3 << 20], b"{\"a\":1}".to_vec(), Vec::new(), (0..70_000u32).flat_map(u32::to_le_bytes).collect()] {
            let stored = super::compressed(&body, <[u8]>::to_vec);
            assert_eq!(stored, lz4_flex::compress_prepend_size(&body));
            assert_eq!(body_of(stored, CODEC_LZ4).unwrap(), body);
        }
    }

    #[test]
    fn journal_cursors_state_and_pruning_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let pos = Position { pool: "p".into(), user: "u".into(), application: "/a".into(), report_activity: "/r".into(), next: "/a/events?ack=2".into() };
            let body = batch::synthetic_body(&[("test", "/e/1", json!({"n": 1})), ("test", "/e/2", json!({"n": 2})), ("test", "/e/3", json!({"n": 3}))]);
            assert_eq!(append(&s, &body, Some(&pos)), [1, 2, 3]);
            s.commit_script("a", Some(2), Some(&StateWrite { replace_all: true, set: &[("x".into(), "1".into())], removed: &[] })).unwrap();
            s.commit_script("b", Some(3), None).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=2");
        assert_eq!(s.head().unwrap(), 3, "the head is the journal's last row (an append writes no meta row)");
        assert_eq!(s.cursor("a").unwrap(), Some(2));
        assert_eq!(s.state("a").unwrap(), vec![("x".to_string(), "1".to_string())]);
        let rest = s.events_after(2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].seq, rest[0].href()), (3, "https://pool.contoso.com/e/3"));
        assert_eq!(rest[0].resource().unwrap()["n"], 3);
        assert_eq!(s.prune(&["a".into(), "b".into()], 1000).unwrap(), 0, "the batch is not passed by every script");
        assert_eq!(s.depth().unwrap(), 3);
        s.commit_script("a", Some(3), None).unwrap();
        assert_eq!(s.prune(&["a".into(), "b".into()], 1000).unwrap(), 1);
        assert_eq!(s.depth().unwrap(), 0);
        assert_eq!(s.head().unwrap(), 3, "numbering goes on after the journal is emptied");
        assert_eq!(append(&s, &batch::synthetic_body(&[("test", "/e/4", json!({}))]), None), [4]);
    }

    #[test]
    fn a_store_whose_connection_the_pool_closed_opens_it_again_with_everything_there() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let body = batch::synthetic_body(&[("test", "/e/1", json!({"n": 1})), ("test", "/e/2", json!({"n": 2}))]);
        assert_eq!(append(&s, &body, None), [1, 2]);
        s.commit_script("a", Some(1), Some(&StateWrite { replace_all: true, set: &[("x".into(), "1".into())], removed: &[] })).unwrap();
        assert!(super::super::pool::close_now(&s.slot), "it was open");
        // Its next use opens it again: reads, then a write numbered after what was there.
        assert_eq!((s.cursor("a").unwrap(), s.head().unwrap()), (Some(1), 2));
        assert_eq!(s.state("a").unwrap(), vec![("x".to_string(), "1".to_string())]);
        assert!(super::super::pool::close_now(&s.slot), "the read opened it");
        assert_eq!(append(&s, &body, None), [3, 4]);
        assert_eq!(s.events_after(1).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
        // `/metrics`' figures of an idle store are remembered: a scrape does not open it again.
        let scripts = ["a".to_string()];
        let f = s.journal_figures(&scripts).unwrap();
        assert_eq!((f.head, f.depth, f.cursors.clone()), (4, 4, vec![("a".to_string(), Some(1))]));
        assert!(super::super::pool::close_now(&s.slot));
        assert_eq!(s.journal_figures(&scripts).unwrap(), f);
        assert!(!super::super::pool::close_now(&s.slot), "not opened for them");
        s.commit_script("a", Some(3), None).unwrap();
        assert_eq!(s.journal_figures(&scripts).unwrap().cursors, [("a".to_string(), Some(3))], "read again after a write");
        // Closed, its database removed: an error naming the file, not a new empty database.
        assert!(super::super::pool::close_now(&s.slot));
        std::fs::remove_file(dir.path().join("agent.db")).unwrap();
        let e = s.head().unwrap_err().to_string();
        assert!(e.contains("agent.db"), "{e}");
        assert!(!dir.path().join("agent.db").exists());
    }

    /// The position's `next` as the file holds it (`meta`'s, or a later journal row's), read
    /// by another connection.
    fn position_on_disk(dir: &Path) -> Option<String> {
        let conn = open_read_only(dir).unwrap();
        position_in(&conn).unwrap().map(|p| p.next)
    }

    #[test]
    fn an_empty_batchs_position_waits_in_memory_while_the_database_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let empty = batch::synthetic_body(&[]);
        // Open: written at once, as a batch with events is.
        assert_eq!(append(&s, &empty, Some(&at(2))), Vec::<u64>::new());
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=2"));
        // Closed: kept in memory, the database not opened for it.
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(3)));
        append(&s, &empty, Some(&at(4)));
        assert!(!super::super::pool::close_now(&s.slot), "not opened for an empty batch");
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=2"));
        // Its next use writes it, before its own writes: a read sees it, then a batch with
        // events puts its own after it.
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=4");
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=4"));
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(5)));
        assert_eq!(append(&s, &batch::synthetic_body(&[("test", "/e/1", json!({}))]), Some(&at(6))), [1]);
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=6"));
        // A graceful stop's `None` is not undone by one kept in memory.
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(7)));
        s.save_position(None).unwrap();
        assert_eq!(position_on_disk(dir.path()), None);
        // Dropped with one in memory (an account removed): written.
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(8)));
        drop(s);
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=8"));
    }

    #[test]
    fn reads_go_on_while_a_kept_position_cannot_be_written_yet() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let empty = batch::synthetic_body(&[]);
        s.commit_script_with("a", Some(1), None, None).unwrap();
        append(&s, &empty, Some(&at(2)));
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(3)));
        // Another process holds the write lock (past the 5 s busy timeout): the kept position
        // cannot go into the database, yet what is there can be read, and the position read
        // is the kept one.
        let other = Connection::open(dir.path().join("agent.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert_eq!(s.cursor("a").unwrap(), Some(1));
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=3");
        // A write still refuses (it may write a newer position, which the kept one must not
        // follow), and once the lock is gone the kept position goes in first.
        assert!(s.commit_script_with("a", Some(2), None, None).is_err());
        other.execute_batch("COMMIT").unwrap();
        s.commit_script_with("a", Some(2), None, None).unwrap();
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=3"));
        assert_eq!(s.cursor("a").unwrap(), Some(2));
    }

    /// A process killed with an empty batch's position in memory: `position.json` holds it,
    /// and the next start resumes from it, not from the database's older one (whose ack the
    /// pool would answer with `resync`). Once the database holds a later position, the file
    /// no longer counts.
    #[test]
    fn a_restart_after_a_kill_resumes_from_the_position_kept_beside_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let empty = batch::synthetic_body(&[]);
        let killed = |s: Store| std::mem::forget(s);
        let s = Store::open(dir.path()).unwrap();
        append(&s, &empty, Some(&at(2)));
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(3)));
        append(&s, &empty, Some(&at(4)));
        killed(s);
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=2"));
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=4", "the newest position, from position.json");
        // Deferred again after the restart: still built on what the database holds.
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(5)));
        killed(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=5");
        // A batch with events puts a later position in the database: the file is stale.
        assert_eq!(append(&s, &batch::synthetic_body(&[("test", "/e/1", json!({}))]), Some(&at(6))), [1]);
        killed(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=6");
        // A graceful stop's removal too; and a file cut short counts for nothing.
        assert!(super::super::pool::close_now(&s.slot));
        append(&s, &empty, Some(&at(7)));
        s.save_position(None).unwrap();
        assert_eq!(s.position().unwrap(), None);
        s.save_position(Some(&at(8))).unwrap();
        std::fs::write(dir.path().join(super::super::position::FILE), b"{\"base\":\"/a/events?ack=8\",\"posi").unwrap();
        assert_eq!(s.position().unwrap().unwrap().next, "/a/events?ack=8");
    }

    /// The channel's batches (empty or not), the scripts' commits and the pool closing the
    /// connection, at once: the position another process reads never goes back, and the last
    /// one is what the database holds once the store is let go.
    #[test]
    fn a_position_on_disk_never_goes_back_while_commits_and_the_pool_close_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(dir.path()).unwrap());
        let ack = |n: u32| super::super::position::at(&format!("/a/events?ack={n:06}"));
        const LAST: u32 = 600;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut helpers = Vec::new();
        for role in 0..2 {
            let (s, stop) = (s.clone(), stop.clone());
            helpers.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    if role == 0 {
                        s.commit_script("a", None, None).unwrap();
                    } else {
                        super::super::pool::close_now(&s.slot);
                    }
                    std::thread::yield_now();
                }
                n
            }));
        }
        let reader = {
            let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                let mut last = String::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(now) = position_on_disk(&dir) {
                        assert!(now >= last, "the position on disk went back from {last} to {now}");
                        last = now;
                    }
                }
            })
        };
        let empty = batch::synthetic_body(&[]);
        for n in 1..=LAST {
            if n % 10 == 0 {
                append(&s, &batch::synthetic_body(&[("test", "/e/1", json!({}))]), Some(&ack(n)));
            } else {
                append(&s, &empty, Some(&ack(n)));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in helpers {
            h.join().unwrap();
        }
        reader.join().unwrap();
        drop(Arc::into_inner(s).expect("the only store"));
        assert_eq!(position_on_disk(dir.path()), Some(ack(LAST).next));
    }

    #[test]
    fn one_event_is_found_in_its_own_batch_and_a_seq_past_i64_finds_nothing() {
        let s = Store::in_memory();
        let batch = |from: u32| {
            let hrefs: Vec<String> = (from..from + 3).map(|n| format!("/e/{n}")).collect();
            batch::synthetic_body(&hrefs.iter().map(|h| ("test", h.as_str(), json!({}))).collect::<Vec<_>>())
        };
        assert_eq!(append(&s, &batch(1), None), [1, 2, 3]);
        assert_eq!(append(&s, &batch(4), None), [4, 5, 6]);
        let five = s.event_at(5).unwrap().unwrap();
        assert_eq!((five.seq, five.href()), (5, "https://pool.contoso.com/e/5"));
        assert_eq!(s.event_at(1).unwrap().unwrap().seq, 1);
        assert!(s.event_at(7).unwrap().is_none());
        assert!(s.event_at(u64::MAX).unwrap().is_none());
        assert!(s.events_after(u64::MAX).unwrap().is_empty(), "a seq past i64::MAX is not read as a negative one");
        assert_eq!(s.events_after(0).unwrap().len(), 6);
    }

    #[test]
    fn watches_are_kept_per_script_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let uris = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        {
            let s = Store::open(dir.path()).unwrap();
            s.watch("a", &uris(&["sip:bob@x", "sip:carol@x"])).unwrap();
            s.watch("b", &uris(&["sip:bob@x", "sip:dave@x"])).unwrap();
            s.unwatch("a", Some(&uris(&["sip:carol@x"]))).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.watched(None).unwrap().into_iter().collect::<Vec<_>>(), ["sip:bob@x", "sip:dave@x"]);
        assert_eq!(s.watched(Some(&["a".to_string()])).unwrap().into_iter().collect::<Vec<_>>(), ["sip:bob@x"]);
        s.unwatch("b", None).unwrap();
        assert_eq!(s.watched(None).unwrap().len(), 1);
    }

    #[test]
    fn the_journal_bound_drops_the_oldest_events_even_for_a_lagging_script() {
        let s = Store::in_memory();
        for b in 0..25 {
            let events: Vec<_> = (0..10).map(|i| ("test".to_string(), format!("/e/{}", b * 10 + i + 1))).collect();
            let refs: Vec<(&str, &str, serde_json::Value)> = events.iter().map(|(r, h)| (r.as_str(), h.as_str(), json!({}))).collect();
            append(&s, &batch::synthetic_body(&refs), None);
        }
        assert_eq!(s.head().unwrap(), 250);
        s.commit_script("lagging", Some(0), None).unwrap();
        s.commit_script("current", Some(250), None).unwrap();
        // The lagging script holds everything while the journal is within its bound…
        assert_eq!(s.prune(&["lagging".into(), "current".into()], 1000).unwrap(), 0);
        // …and past it, the oldest events go: what the lagging script gets next is the
        // oldest event kept, 100 events before the head.
        assert_eq!(s.prune(&["lagging".into(), "current".into()], 100).unwrap(), 15);
        let rest = s.events_after(s.cursor("lagging").unwrap().unwrap()).unwrap();
        assert_eq!((rest.len(), rest[0].seq, rest[0].href()), (100, 151, "https://pool.contoso.com/e/151"));
    }

    /// Every row of `meta`, read by another connection.
    fn meta_rows(dir: &Path) -> Vec<(String, String)> {
        let conn = open_read_only(dir).unwrap();
        let mut st = conn.prepare("SELECT key, value FROM meta ORDER BY key").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn one_event(n: u32) -> Vec<u8> {
        batch::synthetic_body(&[("test", &format!("/e/{n}"), json!({"n": n}))])
    }

    /// A batch with events commits its position's `next` in its own journal row: `meta` is not
    /// written (one b-tree per commit), and the position read, now and after reopening, is the
    /// batch's. Rows count only after the position `meta` holds: not after a new application's
    /// position was saved, nor once a graceful stop removed it.
    #[test]
    fn a_batchs_commit_writes_no_meta_row_and_its_next_is_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let s = Store::open(dir.path()).unwrap();
        // No position in the database yet: the batch's goes into `meta` whole.
        assert_eq!(append(&s, &one_event(1), Some(&at(2))), [1]);
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=2"));
        let before = meta_rows(dir.path());
        assert_eq!(append(&s, &one_event(2), Some(&at(3))), [2]);
        assert_eq!(append(&s, &one_event(3), Some(&at(4))), [3]);
        assert_eq!(meta_rows(dir.path()), before, "a batch's commit wrote to meta");
        assert_eq!(s.position().unwrap(), Some(at(4)));
        assert_eq!(position_on_disk(dir.path()).as_deref(), Some("/a/events?ack=4"), "another process reads it too");
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap(), Some(at(4)), "after reopening");
        // The agent's own event (no position) leaves it where it was.
        assert_eq!(append(&s, &one_event(4), None), [4]);
        assert_eq!(s.position().unwrap(), Some(at(4)));
        // A new application: the rows before its position were the old one's.
        let b = |ack: u32| Position { application: "/b".into(), ..super::super::position::at(&format!("/b/events?ack={ack}")) };
        s.save_position(Some(&b(1))).unwrap();
        assert_eq!(s.position().unwrap(), Some(b(1)));
        let before = meta_rows(dir.path());
        assert_eq!(append(&s, &one_event(5), Some(&b(2))), [5]);
        assert_eq!((s.position().unwrap(), meta_rows(dir.path())), (Some(b(2)), before));
        // A batch of an application other than the database's (as if saving the new one's
        // position had failed): written whole, in `meta`.
        assert_eq!(append(&s, &one_event(6), Some(&at(9))), [6]);
        assert_eq!(s.position().unwrap(), Some(at(9)));
        drop(s);
        assert_eq!(Store::open(dir.path()).unwrap().position().unwrap(), Some(at(9)));
        // A graceful stop: rows alone make no position.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(append(&s, &one_event(7), Some(&at(10))), [7]);
        s.save_position(None).unwrap();
        assert_eq!(s.position().unwrap(), None);
        drop(s);
        assert_eq!(Store::open(dir.path()).unwrap().position().unwrap(), None);
    }

    /// A prune that deletes the journal's last row (whose `next` is the position's) first puts
    /// the position in `meta`: it survives, and the batches after it move it on again.
    #[test]
    fn a_prune_that_deletes_the_last_row_keeps_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        {
            let s = Store::open(dir.path()).unwrap();
            s.save_position(Some(&at(1))).unwrap();
            append(&s, &one_event(1), Some(&at(2)));
            append(&s, &one_event(2), Some(&at(3)));
            s.commit_script("a", Some(2), None).unwrap();
            assert_eq!(s.prune(&["a".into()], 1000).unwrap(), 2);
            assert_eq!((s.depth().unwrap(), s.head().unwrap()), (0, 2));
            assert_eq!(s.position().unwrap(), Some(at(3)));
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.position().unwrap(), Some(at(3)), "after reopening");
        assert_eq!(append(&s, &one_event(3), Some(&at(4))), [3]);
        assert_eq!(s.position().unwrap(), Some(at(4)));
        // A prune that keeps the last row: the same.
        append(&s, &one_event(4), Some(&at(5)));
        s.commit_script("a", Some(3), None).unwrap();
        assert_eq!(s.prune(&["a".into()], 1000).unwrap(), 1);
        assert_eq!(s.position().unwrap(), Some(at(5)));
        drop(s);
        assert_eq!(Store::open(dir.path()).unwrap().position().unwrap(), Some(at(5)));
    }

    /// A database of schema version 1 (`meta` holding the position whole, journal rows without
    /// `next`) opens, upgrades and keeps its position, head and events; then its batches' `next`
    /// go into their rows. Read before the upgrade (`state export`), it gives the same position.
    #[test]
    fn a_version_1_database_upgrades_with_its_position_head_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let body = batch::synthetic_body(&[("test", "/e/1", json!({"n": 1})), ("test", "/e/2", json!({"n": 2}))]);
        {
            let c = Connection::open(dir.path().join("agent.db")).unwrap();
            c.execute_batch(&format!("PRAGMA journal_mode = WAL; {SCHEMA} {TRACES} PRAGMA user_version = 1;")).unwrap();
            c.execute("INSERT INTO journal (first_seq, last_seq, origin, body, codec) VALUES (1, 2, 'https://pool.contoso.com/', ?1, 0)", params![body])
                .unwrap();
            c.execute("INSERT INTO meta (key, value) VALUES ('position', ?1)", params![serde_json::to_string(&at(7)).unwrap()]).unwrap();
            c.execute("INSERT INTO cursors VALUES ('a', 1)", []).unwrap();
        }
        assert_eq!(position_in(&open_read_only(dir.path()).unwrap()).unwrap(), Some(at(7)), "read before the upgrade");
        let s = Store::open(dir.path()).unwrap();
        let version: i64 = s.lock().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!((s.position().unwrap(), s.head().unwrap(), s.cursor("a").unwrap()), (Some(at(7)), 2, Some(1)));
        let hrefs: Vec<String> = s.events_after(0).unwrap().iter().map(|e| e.href().to_string()).collect();
        assert_eq!(hrefs, ["https://pool.contoso.com/e/1", "https://pool.contoso.com/e/2"]);
        let before = meta_rows(dir.path());
        assert_eq!(append(&s, &one_event(3), Some(&at(8))), [3]);
        assert_eq!((s.position().unwrap(), meta_rows(dir.path())), (Some(at(8)), before));
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!((s.position().unwrap(), s.head().unwrap()), (Some(at(8)), 3));
    }

    #[test]
    fn a_journal_written_before_compression_still_replays() {
        let dir = tempfile::tempdir().unwrap();
        let body = batch::synthetic_body(&[("test", "/e/1", json!({"n": 1})), ("test", "/e/2", json!({"n": 2}))]);
        {
            // The schema and row of a database from before the `codec` column.
            let c = Connection::open(dir.path().join("agent.db")).unwrap();
            c.execute_batch("CREATE TABLE journal (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, origin TEXT NOT NULL, body BLOB NOT NULL);")
                .unwrap();
            c.execute("INSERT INTO journal VALUES (1, 2, 'https://pool.contoso.com/', ?1)", params![body]).unwrap();
            c.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('head', '2');").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let old: Vec<String> = s.events_after(0).unwrap().iter().map(|e| e.href().to_string()).collect();
        assert_eq!(old, ["https://pool.contoso.com/e/1", "https://pool.contoso.com/e/2"]);
        assert_eq!(append(&s, &body, None), [3, 4], "new batches go on after the old ones");
        let all: Vec<u64> = s.events_after(1).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(all, [2, 3, 4]);
        let stored: Vec<u8> = s.lock().unwrap().query_row("SELECT body FROM journal WHERE first_seq = 3", [], |r| r.get(0)).unwrap();
        assert!(stored.len() < body.len(), "new bodies are stored compressed");
    }

    fn chunk(traces: &[(u64, &str)], keep: usize) -> TraceChunk {
        let mut c = TraceChunk { keep, n: traces.len(), ..TraceChunk::default() };
        for (seq, text) in traces {
            c.lines.push_str(&format!("{{\"script\":\"a\",\"event\":{{\"seq\":{seq},\"rel\":\"r\"}},\"text\":\"{text}\"}}\n"));
            c.first_seq = if c.first_seq == 0 { *seq } else { c.first_seq.min(*seq) };
            c.last_seq = c.last_seq.max(*seq);
        }
        c
    }

    #[test]
    fn an_existing_database_gets_the_traces_table_on_first_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A database as the version before traces left it: its tables, a cursor, state.
            let c = Connection::open(dir.path().join("agent.db")).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE journal (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL, origin TEXT NOT NULL, body BLOB NOT NULL, codec INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE cursors (script TEXT PRIMARY KEY, seq INTEGER NOT NULL);
                 CREATE TABLE script_state (script TEXT PRIMARY KEY, json TEXT NOT NULL);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE state_keys (script TEXT NOT NULL, key TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (script, key));
                 INSERT INTO cursors VALUES ('a', 7); INSERT INTO state_keys VALUES ('a', 'n', '3'); INSERT INTO meta VALUES ('head', '7');",
            )
            .unwrap();
        }
        // Read before the agent ever ran the new version: no traces, no error.
        assert!(read_traces(&open_read_only(dir.path()).unwrap(), &TraceQuery::default()).unwrap().is_empty());
        let s = Store::open(dir.path()).unwrap();
        let version: i64 = s.lock().unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!((s.cursor("a").unwrap(), s.head().unwrap()), (Some(7), 7), "what was there stays");
        assert_eq!(s.state("a").unwrap(), vec![("n".to_string(), "3".to_string())]);
        s.commit_script_with("a", Some(8), None, Some(&chunk(&[(8, "x")], 100))).unwrap();
        drop(s);
        // Opened again (the migration does not run twice), and read by another connection.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.traces(&TraceQuery::default()).unwrap().len(), 1);
        let other = open_read_only(dir.path()).unwrap();
        let got = read_traces(&other, &TraceQuery { script: Some("a".into()), seq: Some(8), limit: 0 }).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("\"text\":\"x\""));
    }

    #[test]
    fn traces_are_pruned_to_the_last_n_of_each_script_and_found_by_seq() {
        let s = Store::in_memory();
        for i in 0..30u64 {
            // Commits of one and of two traces.
            let c = if i % 2 == 0 { chunk(&[(i * 10 + 1, "one")], 10) } else { chunk(&[(i * 10 + 1, "one"), (i * 10 + 2, "two")], 10) };
            s.commit_script_with("a", Some(i * 10 + 2), None, Some(&c)).unwrap();
            s.commit_script_with("b", Some(i * 10 + 2), None, Some(&chunk(&[(i * 10 + 1, "b")], 3))).unwrap();
        }
        let a = s.traces(&TraceQuery { script: Some("a".into()), ..TraceQuery::default() }).unwrap();
        assert!((10..=11).contains(&a.len()), "a row is kept whole: {}", a.len());
        assert!(a.last().unwrap().contains("\"seq\":292"), "newest last: {a:?}");
        assert_eq!(s.traces(&TraceQuery { script: Some("b".into()), ..TraceQuery::default() }).unwrap().len(), 3);
        let last2 = s.traces(&TraceQuery { script: Some("a".into()), limit: 2, ..TraceQuery::default() }).unwrap();
        assert!(last2[0].contains("\"seq\":291") && last2[1].contains("\"seq\":292"), "{last2:?}");
        // seq 29 is not 291: the filter is exact.
        let by_seq = s.traces(&TraceQuery { seq: Some(291), ..TraceQuery::default() }).unwrap();
        assert_eq!(by_seq.len(), 2, "a's and b's: {by_seq:?}");
        assert!(s.traces(&TraceQuery { seq: Some(29), ..TraceQuery::default() }).unwrap().is_empty());
        // The byte bound: a script's traces never hold much more than TRACES_MAX_BYTES.
        let big = "x".repeat(200 << 10);
        for i in 0..20 {
            s.commit_script_with("c", Some(i + 1), None, Some(&chunk(&[(i + 1, &big)], 100))).unwrap();
        }
        let bytes: usize = s.traces(&TraceQuery { script: Some("c".into()), ..TraceQuery::default() }).unwrap().iter().map(String::len).sum();
        assert!(bytes as u64 <= TRACES_MAX_BYTES + (201 << 10), "{bytes}");
        // keep = 0 (traces turned off): the script's traces go.
        s.commit_script_with("b", None, None, Some(&TraceChunk::default())).unwrap();
        assert!(s.traces(&TraceQuery { script: Some("b".into()), ..TraceQuery::default() }).unwrap().is_empty());
    }

    #[test]
    fn a_commit_of_traces_prepares_nothing_again() {
        // Every commit of a traced script writes and prunes its traces (about 100 a second per
        // script at full speed): a statement SQLite prepares again at each run costs more than
        // the commit, as the window query that pruned did.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 1..=30u64 {
            s.commit_script_with("a", Some(i), None, Some(&chunk(&[(i, "t")], 10))).unwrap();
        }
        let conn = s.lock().unwrap();
        for sql in [TRACES_INSERT, TRACES_OF_SCRIPT, TRACES_PRUNE] {
            let st = conn.prepare_cached(sql).unwrap();
            assert!(st.get_status(rusqlite::StatementStatus::Run) > 0, "{sql} ran");
            assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql} was prepared again");
        }
    }

    /// A batch body of `n` events that compresses to a few KiB (random padding).
    fn padded_body(n: usize) -> Vec<u8> {
        let events: Vec<(String, serde_json::Value)> = (0..n).map(|i| (format!("/e/{i}"), json!({"pad": format!("{:x}", rand::random::<u128>())}))).collect();
        let refs: Vec<(&str, &str, serde_json::Value)> = events.iter().map(|(h, d)| ("test", h.as_str(), d.clone())).collect();
        batch::synthetic_body(&refs)
    }

    #[test]
    fn a_store_written_once_before_its_turn_is_checkpointed_at_it() {
        // The thread walks the stores only after one was used; a store used before its turn
        // and never again must still get its turn, not wait for another store to be used.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_with(dir.path(), std::time::Duration::from_millis(300), 0).unwrap();
        let before = std::fs::metadata(dir.path().join("agent.db")).unwrap().len();
        append(&s, &padded_body(50), None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(dir.path().join("agent.db")).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "the store's turn never came");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn the_wal_is_checkpointed_off_the_writers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_with(dir.path(), std::time::Duration::from_millis(20), 0).unwrap();
        let before = std::fs::metadata(dir.path().join("agent.db")).unwrap().len();
        for _ in 0..20 {
            append(&s, &padded_body(50), None); // far below the automatic threshold
        }
        // The checkpointer copies the journal into the database file by itself.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(dir.path().join("agent.db")).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "no checkpoint happened");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(s.events_after(0).unwrap().len(), 1000);
    }

    #[test]
    fn a_fast_growing_wal_wakes_the_checkpoint_thread_before_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        // Its turn an hour away: only the connection's WAL hook can bring the thread now.
        let s = Store::open_with(dir.path(), std::time::Duration::from_secs(3600), crate::store::checkpoint::WAL_MIN).unwrap();
        let (db, wal) = (dir.path().join("agent.db"), dir.path().join("agent.db-wal"));
        let before = std::fs::metadata(&db).unwrap().len();
        // The pool closes it: the hook must come with the connection opened again.
        assert!(crate::store::pool::close_now(&s.slot));
        let body = padded_body(50);
        // Past the pages that wake the thread, short of those where the writer checkpoints itself.
        let page = 4096 + 24;
        let writer_bound = (crate::store::checkpoint::BOUND_PAGES as u64 - 50) * page;
        while std::fs::metadata(&wal).map_or(0, |m| m.len()) < 300 * page {
            append(&s, &body, None);
            assert!(std::fs::metadata(&wal).unwrap().len() < writer_bound, "the batches are larger than this test expects");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&db).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "the thread did not checkpoint the growing WAL");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn the_wal_stays_bounded_under_a_flood_of_writes() {
        let dir = tempfile::tempdir().unwrap();
        // The worst case for the background thread: it never gets to run (a passive checkpoint
        // that never catches up is the same). The writer's own checkpoint must bound the WAL:
        // its hook is set again here with nothing to wake.
        let s = Store::open_with(dir.path(), std::time::Duration::from_secs(3600), crate::store::checkpoint::WAL_MIN).unwrap();
        crate::store::checkpoint::watch(&mut s.lock().unwrap(), crate::store::checkpoint::Kick::detached()).unwrap();
        let body = padded_body(100);
        for i in 0..1500 {
            append(&s, &body, None);
            if i % 64 == 0 {
                s.prune(&[], 1000).unwrap();
            }
        }
        let wal = std::fs::metadata(dir.path().join("agent.db-wal")).unwrap().len();
        let bound = (crate::store::checkpoint::BOUND_PAGES as u64 + 100) * (4096 + 24);
        assert!(wal < bound, "the WAL grew to {wal} bytes");
    }

    #[test]
    fn a_damaged_stored_body_is_skipped_with_the_rest_kept() {
        let s = Store::in_memory();
        let body = batch::synthetic_body(&[("test", "/e/1", json!({}))]);
        append(&s, &body, None);
        append(&s, &body, None);
        s.lock().unwrap().execute("UPDATE journal SET body = x'ffffff7f00' WHERE first_seq = 1", []).unwrap();
        let left: Vec<u64> = s.events_after(0).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(left, [2]);
    }
}
