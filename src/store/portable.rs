//! One account's state as a portable file (`ucwa-agent state export` / `state import`), so an
//! account that moves to another agent (a fleet resharded) goes on where it was: each script's
//! cursor and `agent.state`, its watches, the channel position, the journal's numbering and the
//! events not yet handled by every script. Traces stay behind (they are a record, not state).
//!
//! Both ends hold the state directory's lock (`agent.lock`) while they work, so neither runs
//! beside an agent using that state. Import replaces the target's state in one transaction,
//! and refuses a target whose state was written after the exported state was (unless forced):
//! that state would be lost.

use super::db::{body_of, open_read_only, Position, Store, StoreError, CODEC_LZ4};
use super::lock::{DirLock, LockError};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::path::Path;

/// What the file says it is, so that another JSON file is refused by name.
const FORMAT: &str = "ucwa-agent-state";
const VERSION: u32 = 1;

/// An account's state, as exported.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    pub version: u32,
    /// The account's name (`default` for the single unnamed account).
    pub account: String,
    /// When the exported state was last written (milliseconds since 1970): the database files'
    /// modification time. Import compares it with the target's.
    pub modified_ms: i64,
    /// The last event seq journaled: the numbering goes on from there.
    pub head: u64,
    pub position: Option<Position>,
    pub scripts: BTreeMap<String, ScriptState>,
    /// The journal's batches still held (those some script has not passed), oldest first.
    pub journal: Vec<JournalBatch>,
}

/// One script's part.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScriptState {
    /// The last event whose handlers returned.
    pub cursor: Option<u64>,
    /// `agent.state`, top-level key by key, the values as stored (JSON).
    pub state: BTreeMap<String, Box<RawValue>>,
    /// The contacts it watches (`agent.people.watch`).
    pub watches: Vec<String>,
}

/// A journal row: a response body as received (the journal re-decodes it).
#[derive(Debug, Serialize, Deserialize)]
pub struct JournalBatch {
    pub first_seq: u64,
    pub last_seq: u64,
    pub origin: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}

/// Exports the state in `dir` (an account's state directory) under the name `account`.
pub fn export_dir(dir: &Path, account: &str) -> Result<Snapshot, PortError> {
    if !dir.join("agent.db").exists() {
        return Err(PortError::Refused(format!("{} has no agent.db: no state to export for the account {account:?}", dir.display())));
    }
    let _lock = DirLock::acquire(dir)?;
    // Before any connection: a reader may create an empty WAL file.
    let modified = modified_ms(dir).unwrap_or(0);
    let conn = open_read_only(dir)?;
    let err = |source| StoreError { path: dir.join("agent.db"), source };
    let mut s = read(&conn, account).map_err(err)?;
    s.position = super::position::newest(dir, s.position.take());
    s.modified_ms = modified;
    Ok(s)
}

/// Imports `s` into `dir`, replacing what state it holds. Refused while an agent holds the
/// directory, and (unless `force`) when the state there was written after `s` was.
pub fn import_dir(dir: &Path, s: &Snapshot, force: bool) -> Result<(), PortError> {
    if s.format != FORMAT || s.version != VERSION {
        return Err(PortError::Refused(format!("not a state file this version reads (format {:?}, version {})", s.format, s.version)));
    }
    consistent(s).map_err(PortError::Refused)?;
    let _lock = DirLock::acquire(dir)?;
    if !force && dir.join("agent.db").exists() {
        let here = modified_ms(dir).unwrap_or(0);
        let conn = open_read_only(dir)?;
        let has_state = holds_state(&conn).map_err(|source| StoreError { path: dir.join("agent.db"), source })?;
        drop(conn);
        if has_state && here > s.modified_ms {
            return Err(PortError::Refused(format!(
                "{} holds state of the account written at {} (ms since 1970), after the exported state ({}): importing would lose it; --force to replace it anyway",
                dir.display(),
                here,
                s.modified_ms
            )));
        }
    }
    {
        let store = Store::open(dir)?;
        let mut conn = store.lock()?;
        let tx = conn.transaction().map_err(|e| store.err(e))?;
        write(&tx, s).map_err(|e| store.err(e))?;
        tx.commit().map_err(|e| store.err(e))?;
    }
    // What the agent here kept beside its database is not the imported account's.
    super::position::remove(dir);
    // The store closed (its WAL checkpointed into agent.db): date the state as the export's, so
    // importing the same file again is not refused as newer, and the agent's first write is.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.modified_ms.max(0) as u64);
    for name in ["agent.db", "agent.db-wal"] {
        if let Ok(f) = std::fs::File::options().write(true).open(dir.join(name)) {
            let _ = f.set_modified(at);
        }
    }
    Ok(())
}

/// The file's numbers hold together: the store keeps seqs as SQLite integers (a head past
/// `i64::MAX` reads back as 0, and one near it overflows when the next batch is numbered: the
/// account's task panicked), and a cursor past the head, or a batch past it, would have the
/// agent number new events at or below a cursor: its scripts would skip every one, silently.
fn consistent(s: &Snapshot) -> Result<(), String> {
    // 2^53: a million events a second for 285 years, and far below `i64::MAX`.
    const MAX: u64 = 1 << 53;
    if s.head > MAX {
        return Err(format!("`head` is {}, past the largest seq the state holds ({MAX})", s.head));
    }
    for (name, st) in &s.scripts {
        // A script's name is its file's stem: what a file name can hold (no `/`, no NUL).
        if name.is_empty() || name.len() > 255 || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(format!("`scripts` has a key {name:?}: expected a script's name (its file name without .lua)"));
        }
        if let Some(c) = st.cursor.filter(|c| *c > s.head) {
            return Err(format!("`scripts.{name}.cursor` is {c}, past the journal's `head` ({}): the script would skip every new event", s.head));
        }
        // As `agent.people.watch` takes them: another would be sent to the pool's presence
        // subscription, refused, and retried.
        if let Some((i, uri)) = st.watches.iter().enumerate().find(|(_, u)| !is_watchable(u)) {
            return Err(format!("`scripts.{name}.watches[{i}]` is {uri:?}: expected a sip: URI such as \"sip:ann@contoso.com\""));
        }
    }
    let mut after = 0;
    for (i, b) in s.journal.iter().enumerate() {
        if b.first_seq <= after || b.last_seq < b.first_seq || b.last_seq > s.head {
            return Err(format!(
                "`journal[{i}]` holds seqs {}..={}: batches must follow each other from 1, up to `head` ({})",
                b.first_seq, b.last_seq, s.head
            ));
        }
        if !b.body.trim_start().starts_with('{') || serde_json::from_str::<serde::de::IgnoredAny>(&b.body).is_err() {
            return Err(format!("`journal[{i}].body` is not a JSON object: expected an event-channel response as received"));
        }
        after = b.last_seq;
    }
    Ok(())
}

/// A contact as `agent.people.watch` takes it (its Lua pattern
/// `^sip:[^%s%c,/]+@[^%s%c,/]+$`: an `@` neither first nor last, which the classes also
/// allow elsewhere), so that every exported watch is imported again.
fn is_watchable(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("sip:") else { return false };
    let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || c == ',' || c == '/';
    let inner_at = rest.char_indices().any(|(i, c)| c == '@' && i > 0 && i + 1 < rest.len());
    uri.len() <= 512 && inner_at && !rest.chars().any(bad)
}

#[test]
fn what_agent_people_watch_takes_imports() {
    for ok in ["sip:ann@contoso.com", "sip:@a@b", "sip:a@b@", "sip:ä@x"] {
        assert!(is_watchable(ok), "{ok}");
    }
    for bad in ["tel:+1", "sip:ann", "sip:@b", "sip:a@", "sip:a b@c", "sip:a@c/d", "sip:a,b@c", "sip:a\u{7f}@c"] {
        assert!(!is_watchable(bad), "{bad}");
    }
}

/// When the state in `dir` was last written: its files' latest modification time (an empty
/// WAL, as a reader leaves, is no write; `position.json` is the channel position of an idle
/// account).
fn modified_ms(dir: &Path) -> Option<i64> {
    ["agent.db", "agent.db-wal", super::position::FILE]
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .filter(|m| m.len() > 0)
        .filter_map(|m| m.modified().ok())
        .max()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
}

/// Whether a database holds any account state (a fresh one, or one `check` opened, holds none).
fn holds_state(conn: &Connection) -> rusqlite::Result<bool> {
    let any = |sql: &str| conn.prepare(sql)?.exists([]);
    Ok(any("SELECT 1 FROM meta WHERE key IN ('head', 'position')")?
        || any("SELECT 1 FROM journal")?
        || any("SELECT 1 FROM cursors")?
        || any("SELECT 1 FROM state_keys")?
        || any("SELECT 1 FROM script_state")?
        || any("SELECT 1 FROM watches")?)
}

fn read(conn: &Connection, account: &str) -> rusqlite::Result<Snapshot> {
    let head = super::db::head_in(conn)? as u64;
    // (`meta`'s position with the `next` of the batches journaled since: where the channel stands.)
    let position = super::db::position_in(conn)?;
    let mut scripts: BTreeMap<String, ScriptState> = BTreeMap::new();
    for row in conn.prepare("SELECT script, seq FROM cursors")?.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (script, seq) = row?;
        scripts.entry(script).or_default().cursor = Some(seq as u64);
    }
    let raw = |json: String| RawValue::from_string(json).ok();
    // A state saved whole by an earlier version comes out split into its keys, as `Store::state` reads it.
    for row in conn.prepare("SELECT script, json FROM script_state")?.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (script, json) = row?;
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&json) {
            let st = &mut scripts.entry(script).or_default().state;
            st.extend(map.into_iter().filter_map(|(k, v)| Some((k, raw(v.to_string())?))));
        }
    }
    for row in conn
        .prepare("SELECT script, key, json FROM state_keys")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
    {
        let (script, key, json) = row?;
        let st = &mut scripts.entry(script).or_default().state;
        if let Some(v) = raw(json) {
            st.insert(key, v);
        }
    }
    for row in conn.prepare("SELECT script, uri FROM watches ORDER BY script, uri")?.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (script, uri) = row?;
        scripts.entry(script).or_default().watches.push(uri);
    }
    // Only what some script has not passed: the agent prunes the rest in its own time, and a
    // script never seen starts at the head (`ScriptHost::catch_up`), so none reads them again.
    let passed = scripts.values().filter_map(|s| s.cursor).min().map_or(-1, |c| c as i64);
    let mut journal = Vec::new();
    let mut q = conn.prepare("SELECT first_seq, last_seq, origin, body, codec FROM journal WHERE last_seq > ?1 ORDER BY first_seq")?;
    let mut rows = q.query([passed])?;
    while let Some(r) = rows.next()? {
        let (first, last): (i64, i64) = (r.get(0)?, r.get(1)?);
        // A damaged row is left out, as the journal itself skips it on replay.
        let Ok(body) = body_of(r.get(3)?, r.get(4)?) else { continue };
        let Ok(body) = String::from_utf8(body) else { continue };
        journal.push(JournalBatch { first_seq: first as u64, last_seq: last as u64, origin: r.get(2)?, body });
    }
    Ok(Snapshot { format: FORMAT.into(), version: VERSION, account: account.into(), modified_ms: 0, head, position, scripts, journal })
}

fn write(tx: &Connection, s: &Snapshot) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DELETE FROM journal; DELETE FROM cursors; DELETE FROM state_keys; DELETE FROM script_state; DELETE FROM watches; DELETE FROM traces;
         DELETE FROM meta WHERE key IN ('head', 'position');",
    )?;
    tx.execute("INSERT INTO meta (key, value) VALUES ('head', ?1)", params![s.head.to_string()])?;
    if let Some(p) = &s.position {
        // After the imported rows (which hold no `next`): the batches journaled here next move it.
        super::db::write_position(tx, p, s.head as i64)?;
    }
    for (script, st) in &s.scripts {
        if let Some(c) = st.cursor {
            tx.execute("INSERT INTO cursors (script, seq) VALUES (?1, ?2)", params![script, c as i64])?;
        }
        for (k, v) in &st.state {
            tx.execute("INSERT INTO state_keys (script, key, json) VALUES (?1, ?2, ?3)", params![script, k, v.get()])?;
        }
        for uri in &st.watches {
            tx.execute("INSERT OR IGNORE INTO watches (script, uri) VALUES (?1, ?2)", params![script, uri])?;
        }
    }
    for b in &s.journal {
        let stored = lz4_flex::compress_prepend_size(b.body.as_bytes());
        tx.execute(
            "INSERT INTO journal (first_seq, last_seq, origin, body, codec) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![b.first_seq as i64, b.last_seq as i64, b.origin, stored, CODEC_LZ4],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateWrite;
    use crate::ucwa::{batch, Origin};
    use serde_json::json;

    /// The position an agent killed while it kept it beside the database (`position.json`)
    /// travels; the target's own file of that kind does not outlive the import.
    #[test]
    fn an_account_moves_with_the_position_kept_beside_its_database() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        Store::open(from.path()).unwrap().save_position(Some(&at(9))).unwrap();
        super::super::position::write(from.path(), Some("/a/events?ack=9"), &at(12));
        let snap = export_dir(from.path(), "reception").unwrap();
        assert_eq!(snap.position, Some(at(12)));
        Store::open(to.path()).unwrap().save_position(Some(&at(1))).unwrap();
        super::super::position::write(to.path(), Some("/a/events?ack=1"), &at(3));
        import_dir(to.path(), &snap, true).unwrap();
        assert!(!to.path().join(super::super::position::FILE).exists());
        assert_eq!(Store::open(to.path()).unwrap().position().unwrap(), Some(at(12)));
    }

    /// The position the batches journaled since `meta`'s last write moved on (their rows hold
    /// its `next`) travels; the target's own rows, newer than its position, count no more, and
    /// the batches journaled after the import move the imported position on.
    #[test]
    fn an_account_moves_with_the_position_its_journaled_batches_moved_on() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
        let at = |ack: u32| super::super::position::at(&format!("/a/events?ack={ack}"));
        let append = |s: &Store, n: u32, p: &Position| {
            let body = batch::synthetic_body(&[("test", &format!("/e/{n}"), json!({}))]);
            let mut events = batch::parse(&body, &origin).unwrap().events;
            s.append(&origin, &body, &mut events, Some(p)).unwrap();
            events[0].seq
        };
        {
            let s = Store::open(from.path()).unwrap();
            s.save_position(Some(&at(1))).unwrap();
            append(&s, 1, &at(2));
            append(&s, 2, &at(3));
        }
        let snap = export_dir(from.path(), "reception").unwrap();
        assert_eq!((snap.position.clone(), snap.head), (Some(at(3)), 2));
        {
            let s = Store::open(to.path()).unwrap();
            s.save_position(Some(&at(1))).unwrap();
            for n in 1..=5 {
                append(&s, n, &at(20 + n));
            }
        }
        import_dir(to.path(), &snap, true).unwrap();
        let s = Store::open(to.path()).unwrap();
        assert_eq!((s.position().unwrap(), s.head().unwrap()), (Some(at(3)), 2));
        assert_eq!(append(&s, 3, &at(4)), 3);
        assert_eq!(s.position().unwrap(), Some(at(4)));
    }

    #[test]
    fn an_account_moves_with_its_cursors_state_watches_position_and_unhandled_events() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
        let pos = Position {
            pool: "https://pool.contoso.com/".into(),
            user: "u".into(),
            application: "/a".into(),
            report_activity: "/r".into(),
            next: "/a/events?ack=9".into(),
        };
        {
            let s = Store::open(from.path()).unwrap();
            for n in 0..3 {
                let body = batch::synthetic_body(&[("test", &format!("/e/{n}"), json!({"n": n}))]);
                let mut events = batch::parse(&body, &origin).unwrap().events;
                s.append(&origin, &body, &mut events, Some(&pos)).unwrap();
            }
            s.commit_script(
                "a",
                Some(2),
                Some(&StateWrite { replace_all: true, set: &[("calls".into(), "{\"n\":2.5,\"who\":[\"x\"]}".into())], removed: &[] }),
            )
            .unwrap();
            s.commit_script("b", Some(3), None).unwrap();
            s.watch("b", &["sip:bob@contoso.com".into()]).unwrap();
        }
        // Not pruned yet (the agent prunes in its own time): the batches both scripts passed stay behind.
        let snap = export_dir(from.path(), "reception").unwrap();
        assert_eq!((snap.head, snap.journal.len(), snap.account.as_str()), (3, 1, "reception"), "only the batch `a` has not passed travels");
        // Through the file's text, as the command writes and reads it.
        let text = serde_json::to_string(&snap).unwrap();
        import_dir(to.path(), &serde_json::from_str(&text).unwrap(), false).unwrap();
        let s = Store::open(to.path()).unwrap();
        assert_eq!((s.cursor("a").unwrap(), s.cursor("b").unwrap(), s.head().unwrap()), (Some(2), Some(3), 3));
        assert_eq!(s.state("a").unwrap(), [("calls".to_string(), "{\"n\":2.5,\"who\":[\"x\"]}".to_string())], "values kept as stored");
        assert_eq!(s.watched(None).unwrap().into_iter().collect::<Vec<_>>(), ["sip:bob@contoso.com"]);
        assert_eq!(s.position().unwrap(), Some(pos));
        let rest = s.events_after(2).unwrap();
        assert_eq!((rest.len(), rest[0].seq, rest[0].href()), (1, 3, "https://pool.contoso.com/e/2"));
        let body = batch::synthetic_body(&[("test", "/e/9", json!({}))]);
        let mut events = batch::parse(&body, &origin).unwrap().events;
        s.append(&origin, &body, &mut events, None).unwrap();
        assert_eq!(events[0].seq, 4, "numbering goes on");
    }

    #[test]
    fn import_refuses_a_running_agent_and_newer_state_unless_forced() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        {
            // One event journaled and handled (a cursor is never past the head).
            let s = Store::open(from.path()).unwrap();
            let origin = Origin::of(&url::Url::parse("https://pool.contoso.com/").unwrap());
            let body = batch::synthetic_body(&[("test", "/e/1", json!({}))]);
            let mut events = batch::parse(&body, &origin).unwrap().events;
            s.append(&origin, &body, &mut events, None).unwrap();
            s.commit_script("a", Some(1), None).unwrap();
        }
        let snap = export_dir(from.path(), "a").unwrap();
        // The lock held, as a running agent holds it.
        let held = DirLock::acquire(to.path()).unwrap();
        let e = import_dir(to.path(), &snap, true).unwrap_err().to_string();
        assert!(e.contains("in use by another ucwa-agent"), "{e}");
        let e = export_dir(to.path(), "a").unwrap_err().to_string();
        assert!(e.contains("no agent.db"), "{e}");
        drop(held);
        import_dir(to.path(), &snap, false).unwrap();
        import_dir(to.path(), &snap, false).expect("the same file again: the state there is not newer");
        // The agent then runs on it and writes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        Store::open(to.path()).unwrap().commit_script("a", Some(7), None).unwrap();
        let e = import_dir(to.path(), &snap, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(Store::open(to.path()).unwrap().cursor("a").unwrap(), Some(7), "nothing replaced");
        import_dir(to.path(), &snap, true).unwrap();
        assert_eq!(Store::open(to.path()).unwrap().cursor("a").unwrap(), Some(1));
        let held = DirLock::acquire(from.path()).unwrap();
        assert!(export_dir(from.path(), "a").unwrap_err().to_string().contains("in use"));
        drop(held);
    }
    #[test]
    fn import_refuses_numbers_that_would_leave_the_scripts_deaf() {
        let to = tempfile::tempdir().unwrap();
        let snap = |head: u64, cursor: u64, journal: &[(u64, u64)]| Snapshot {
            format: FORMAT.into(),
            version: VERSION,
            account: "a".into(),
            modified_ms: 0,
            head,
            position: None,
            scripts: [("s".to_string(), ScriptState { cursor: Some(cursor), ..Default::default() })].into(),
            journal: journal
                .iter()
                .map(|&(first_seq, last_seq)| JournalBatch { first_seq, last_seq, origin: "https://pool/".into(), body: "{}".into() })
                .collect(),
        };
        for (bad, key) in [
            (snap(u64::MAX, 1, &[]), "`head`"),
            // The next batch would be numbered past what SQLite holds.
            (snap(i64::MAX as u64, 1, &[]), "`head`"),
            (snap(5, 1_000_000, &[]), "`scripts.s.cursor`"),
            (snap(5, 1, &[(3, 2)]), "`journal[0]`"),
            (snap(5, 1, &[(2, 9)]), "`journal[0]`"),
            (snap(5, 1, &[(1, 3), (3, 4)]), "`journal[1]`"),
            (Snapshot { scripts: [("../x".to_string(), ScriptState::default())].into(), ..snap(5, 1, &[]) }, "\"../x\""),
            (Snapshot { scripts: [("a\0b".to_string(), ScriptState::default())].into(), ..snap(5, 1, &[]) }, "expected a script's name"),
            (
                Snapshot {
                    scripts: [("s".to_string(), ScriptState { watches: vec!["sip:ann@contoso.com".into(), "tel:+1".into()], ..Default::default() })].into(),
                    ..snap(5, 1, &[])
                },
                "`scripts.s.watches[1]`",
            ),
            (
                Snapshot {
                    journal: vec![JournalBatch { first_seq: 1, last_seq: 1, origin: "https://pool/".into(), body: "not json".into() }],
                    ..snap(5, 1, &[])
                },
                "`journal[0].body`",
            ),
        ] {
            let e = import_dir(to.path(), &bad, true).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
            assert!(!to.path().join("agent.db").exists(), "nothing written for {key}");
        }
        import_dir(to.path(), &snap(5, 5, &[(1, 3), (4, 5)]), false).unwrap();
        assert_eq!(Store::open(to.path()).unwrap().head().unwrap(), 5);
    }
}
