//! The agent's durable state, one SQLite database (`<state.dir>/agent.db`, WAL):
//!
//! - `journal`: every event received, in channel order (`seq`), appended before the batch is
//!   acknowledged by following `next`; one row per batch (`first_seq..=last_seq`) holding the
//!   response body exactly as received (re-decoded on replay), LZ4-compressed (`codec` 1;
//!   event batches repeat the same hrefs and keys, so they shrink 5–20×, and writing less
//!   to SQLite saves far more time than compressing costs); a batch costs one insert and no
//!   re-encoding, whatever its size; with the channel's `next` after the batch, when it came
//!   with a position (schema version 2: a commit writes this one table, not `meta` too);
//! - `cursors`: per script, the last event whose handlers have returned;
//! - `state_keys`: per script and top-level key of its `agent.state`, the value as JSON,
//!   committed with the cursor (only the keys that changed are written);
//! - `script_state`: `agent.state` as one JSON object, as versions before `state_keys` wrote
//!   it (read when a script has no keys yet; removed at its next commit);
//! - `meta`: the channel position (pool, application, the href to poll next) as the
//!   application's start, an empty batch, a prune or an import last wrote it, with the
//!   journal's head then: the `next` of a later journal row is newer (`db::position_in`);
//! - `watches`: per script, the contacts it watches (`agent.people.watch`): the account's
//!   presence subscription is made of the loaded scripts' watches (`agent/presence.rs`).
//! - `traces`: per script, what its last runs did (`script::trace`): one row per commit of
//!   the script, holding the traces of the runs it commits (JSON, one per line), written in
//!   the commit's transaction (LZ4-compressed as the journal is: traces repeat themselves) and
//!   pruned as it goes to the last `scripts.traces_per_script` traces and `TRACES_MAX_BYTES`
//!   (uncompressed) of the script (schema version 1: a database of an earlier
//!   version gets the table when it is first opened).
//!
//! Journal rows are pruned once every loaded script has passed them. `portable` copies one
//! account's state to a file and back (`ucwa-agent state export` / `import`).
//!
//! - `position.rs`: `Position`, and `position.json` beside the database, where an idle
//!   account's empty batches put their position while the pool has the database closed;
//! - `db.rs`: `Store`, the database and its reads and writes; `pool.rs`: the bound on open
//!   connections (`state.open_databases`), a store's closed when idle and opened again at its
//!   next use; `checkpoint.rs`: the WAL checkpoints off the writers' path; `lock.rs`: `agent.lock`, one agent per state dir;
//!   `portable.rs`: `state export` / `state import`.

mod checkpoint;
mod db;
mod lock;
mod pool;
pub mod portable;
mod position;

pub use db::{open_read_only, read_traces, JournalFigures, StateWrite, Store, StoreError, TraceChunk, TraceQuery, TRACES_MAX_BYTES};
pub use lock::{DirLock, LockError};
pub use pool::{configure as configure_open_databases, DEFAULT_OPEN as DEFAULT_OPEN_DATABASES};
pub use position::Position;
