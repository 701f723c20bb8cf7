//! Persistence: the whole state in one SQLite file under `--data-dir`, written incrementally.
//!
//! # Files
//! - `FORMAT`: `{"format": "session-pool-state", "version": 2}`, written before the database is
//!   created, read before it is opened: a build never opens a state it does not understand.
//! - `state.sqlite` (and, while the server runs or after a crash, `state.sqlite-wal`): two tables,
//!   `pools` (name -> key, config) and `sessions` ((pool key, id) -> session), each value a JSON
//!   record with a CRC-32 of its own, so damage inside a record is found, not read as data. SQLite's
//!   write-ahead log makes every commit atomic and durable: what is on disk is always a complete
//!   state, whenever the process dies, the disk fills or a write fails. `docs/persistence.md` says
//!   why SQLite and not the engine this service used before.
//! - `LOCK`: held with an exclusive file lock while a server uses the directory.
//!
//! # Cost
//! Pools record which sessions changed ([`crate::pool::Pool::take_changes`]). The writer takes at
//! most [`CHUNK`] of them at a time (under each pool's lock, a slice at a time) and commits them in
//! one transaction, so a cycle costs O(changes), not O(sessions), and a large change (a pool filled
//! with a million sessions) goes in chunks that each commit on their own: a small change made
//! meanwhile waits for one chunk, not for the whole of it. A chunk that fails to commit is kept and
//! written first next time, so a full disk delays persistence but never loses a change.
//!
//! A pool is stored under a [`PoolKey`] that is new for each incarnation of it. Deleting a pool
//! (or resetting `default`) removes one row; the sessions stored under the old key are deleted in
//! the background, a chunk at a time, and are ignored by a restore meanwhile. The space they held is
//! reused, and given back to the file system when more than half of the file is free.
//!
//! # Layout
//! - `mod.rs`: [`Store`] and [`Store::open`].
//! - `files`: the data directory's lock and format file, and the connections to the state file.
//! - `records`: the tables, the records and their checksums; reading every record back.
//! - `wal`: what a crash cut short in the write-ahead log, for a warning.
//! - `restore`: [`Store::restore`], the state into the registry at start.
//! - `write`: [`Store::write_chunk`], the changes out in bounded chunks, and the writer thread
//!   ([`write_until_stopped`]).
//! - `check`: [`check()`], the verification of `session-pool check`.

mod check;
mod files;
mod records;
mod restore;
mod wal;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rusqlite::Connection;

pub use check::{check, CheckStats};
pub use files::{FORMAT_FILE, FORMAT_VERSION, LOCK_FILE, STATE_FILE};
pub use restore::RestoreStats;
pub use write::{write_until_stopped, WriteStats, CHUNK};

use crate::pool::PoolKey;
use crate::session::SessionId;
use files::{check_format, lock_dir, open_read_only, open_writable, write_format, FORMAT_1_STATE_FILE};
use records::SCHEMA;
use wal::{unfinished_wal_tail, wal_path};
use write::Op;

/// The open state of one data directory. Holds the directory's lock until dropped. Used by one
/// thread at a time: the restore, then the writer.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    cache_kib: i64,
    _lock: File,
    /// The connection; `None` after a failed write, so the next write starts on a fresh one.
    conn: Option<Connection>,
    /// A chunk that failed to commit, written before anything newer.
    carry: Option<Vec<Op>>,
    /// Keys of deleted pools whose sessions are still stored.
    dead: BTreeSet<i64>,
    /// Where the id-order walk of each pool with a large backlog goes on.
    walks: HashMap<PoolKey, SessionId>,
}

impl Store {
    /// Locks `dir` and opens its state, creating both when the directory is new. Nothing is written
    /// to an existing state until [`Store::restore`] has read all of it.
    ///
    /// # Errors
    /// The directory is not a directory or is in use by another process; the format file or the state
    /// file cannot be read (the message names the file and the cause, and the file is left as it was).
    pub fn open(dir: &Path, cache_mb: u32) -> anyhow::Result<Self> {
        let lock = lock_dir(dir)?;
        let path = dir.join(STATE_FILE);
        let format_path = dir.join(FORMAT_FILE);
        if !path.exists() && dir.join(FORMAT_1_STATE_FILE).exists() {
            bail!(
                "{} holds a state of format 1 (state.redb), which this build does not read: export its pools \
                 with the build that wrote it (GET /v1/pools/{{pool}}/export) and import them here",
                dir.display()
            );
        }
        let cache_kib = i64::from(cache_mb) * 1024;
        let conn = if path.exists() {
            check_format(&format_path, &path)?;
            if let Some(tail) = unfinished_wal_tail(&wal_path(&path))? {
                tracing::warn!("{tail}; the state is that of the last complete commit");
            }
            open_read_only(&path, cache_kib)?
        } else {
            write_format(dir, &format_path)?;
            let conn = open_writable(&path, cache_kib)?;
            conn.execute_batch(SCHEMA).with_context(|| format!("cannot create the state file {}", path.display()))?;
            conn
        };
        Ok(Self {
            path,
            cache_kib,
            _lock: lock,
            conn: Some(conn),
            carry: None,
            dead: BTreeSet::new(),
            walks: HashMap::new(),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
