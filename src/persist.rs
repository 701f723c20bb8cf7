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

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::pool::{PoolConfig, PoolKey, Registry};
use crate::session::{Cookie, Lease, RetiredReason, Retirement, Session, SessionId, SessionSettings, Timestamp};

/// The version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_NAME: &str = "session-pool-state";
/// The database file inside the data directory.
pub const STATE_FILE: &str = "state.sqlite";
/// The format file inside the data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The state file of format 1 (redb), which this build does not read.
const FORMAT_1_STATE_FILE: &str = "state.redb";

/// The most sessions one transaction writes or removes.
pub const CHUNK: usize = 10_000;
/// The most sessions taken (and encoded) from a pool in one hold of its lock.
const SLICE: usize = 256;
/// Pages given back to the file system per chunk while the file is mostly free space (4 KiB pages).
const VACUUM_PAGES: u32 = 4_096;

const SCHEMA: &str = "
    CREATE TABLE pools (
        name TEXT PRIMARY KEY NOT NULL,
        key INTEGER NOT NULL,
        record BLOB NOT NULL,
        crc INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sessions (
        pool INTEGER NOT NULL,
        id TEXT NOT NULL,
        record BLOB NOT NULL,
        crc INTEGER NOT NULL,
        PRIMARY KEY (pool, id)
    ) WITHOUT ROWID;
";

#[derive(Debug, Serialize, Deserialize)]
struct FormatRecord {
    format: String,
    version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SettingsRecord {
    max_age_secs: f64,
    max_usage_count: u32,
    max_error_score: f64,
    error_score_decrement: f64,
    blocked_status_codes: Vec<u16>,
}

impl From<&SessionSettings> for SettingsRecord {
    fn from(s: &SessionSettings) -> Self {
        Self {
            max_age_secs: s.max_age_secs,
            max_usage_count: s.max_usage_count,
            max_error_score: s.max_error_score,
            error_score_decrement: s.error_score_decrement,
            blocked_status_codes: s.blocked_status_codes.to_vec(),
        }
    }
}

impl From<SettingsRecord> for SessionSettings {
    fn from(r: SettingsRecord) -> Self {
        Self {
            max_age_secs: r.max_age_secs,
            max_usage_count: r.max_usage_count,
            max_error_score: r.max_error_score,
            error_score_decrement: r.error_score_decrement,
            blocked_status_codes: Arc::from(r.blocked_status_codes),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PoolRecord {
    max_pool_size: u32,
    session: SettingsRecord,
    #[serde(default)]
    proxy_urls: Vec<String>,
    #[serde(default)]
    proxy_url_template: Option<String>,
    created_at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
struct RetiredRecord {
    reason: String,
    at: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    id: Uuid,
    until: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    created_at: Timestamp,
    expires_at: Timestamp,
    settings: SettingsRecord,
    usage_count: u32,
    error_score: f64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    user_data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<Cookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired: Option<RetiredRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseRecord>,
}

fn encode_session(s: &Session) -> Vec<u8> {
    let record = SessionRecord {
        created_at: s.created_at,
        expires_at: s.expires_at,
        settings: SettingsRecord::from(&*s.settings),
        usage_count: s.usage_count,
        error_score: s.error_score,
        user_data: s.user_data.clone(),
        cookies: s.cookies.clone(),
        proxy_url: s.proxy_url.as_deref().map(str::to_owned),
        retired: s.retirement.map(|r| RetiredRecord { reason: r.reason.as_str().to_owned(), at: r.at }),
        lease: s.lease.map(|l| LeaseRecord { id: l.id, until: l.until }),
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

fn encode_pool(config: &PoolConfig, created_at: Timestamp) -> Vec<u8> {
    let record = PoolRecord {
        max_pool_size: config.max_pool_size,
        session: SettingsRecord::from(&*config.session),
        proxy_urls: config.proxy_urls.clone(),
        proxy_url_template: config.proxy_url_template.clone(),
        created_at,
    };
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The checksum stored beside a record: over its key too, so a record moved under another key is
/// caught as well as a damaged one.
fn checksum(key: &[u8], record: &[u8]) -> i64 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(&[0]);
    hasher.update(record);
    i64::from(hasher.finalize())
}

fn session_checksum(pool: PoolKey, id: &str, record: &[u8]) -> i64 {
    let mut key = pool.0.to_le_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    checksum(&key, record)
}

fn pool_checksum(name: &str, pool: PoolKey, record: &[u8]) -> i64 {
    let mut key = name.as_bytes().to_vec();
    key.extend_from_slice(&pool.0.to_le_bytes());
    checksum(&key, record)
}

/// One change to the stored state. A chunk applies its operations in the order they were taken.
#[derive(Debug)]
enum Op {
    /// A pool deleted, or `default` reset: its row goes, its sessions are deleted in the background.
    RemovePool(String, PoolKey),
    /// A pool's configuration, written under its current key.
    PutPool(String, PoolKey, Vec<u8>),
    RemoveSession(PoolKey, SessionId),
    PutSession(PoolKey, SessionId, Vec<u8>),
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// Sessions written or removed.
    pub sessions: usize,
    /// Bytes of records written.
    pub bytes: usize,
    /// Whether changes are left for another chunk.
    pub more: bool,
    /// Whether background work is left (sessions of deleted pools, free space to give back).
    pub background: bool,
}

/// What a restore found.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreStats {
    /// Pools restored.
    pub pools: usize,
    /// Sessions restored.
    pub sessions: usize,
}

/// What [`check`] found in a sound state.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckStats {
    /// Pools stored.
    pub pools: usize,
    /// Sessions stored under a live pool.
    pub sessions: usize,
    /// Sessions of deleted pools not yet removed.
    pub orphans: usize,
}

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

    /// Loads every pool and session into `registry`, then reopens the state for writing. Call before
    /// serving `/v1`, from a thread that may block.
    ///
    /// # Errors
    /// A damaged file or a record that cannot be read; the message names the file and the record.
    pub fn restore(&mut self, registry: &Registry, now: Timestamp) -> anyhow::Result<RestoreStats> {
        let conn = self.conn.take().context("the state is not open")?;
        let restored = self.read_into(&conn, registry, now);
        close_read_only(conn, &self.path);
        let (pools, sessions, restored_pools) = restored?;
        // What was just read is on disk already, but for what the clock removed on the way in
        // (sessions past their retention); a pool that had no record (the `default` of a new
        // directory) still has its config to write.
        let mut removals = Vec::new();
        for pool in registry.pools() {
            let mut pool = pool.blocking_lock();
            let key = pool.key();
            loop {
                let changes = pool.take_changes(usize::MAX);
                removals.extend(changes.removed.into_iter().map(|id| Op::RemoveSession(key, id)));
                if !changes.more {
                    break;
                }
            }
            if !restored_pools.contains(pool.name()) {
                pool.mark_config_changed();
            }
        }
        registry.take_removed_pools();
        if !removals.is_empty() {
            self.carry = Some(removals);
        }
        self.conn = Some(open_writable(&self.path, self.cache_kib)?);
        Ok(RestoreStats { pools, sessions })
    }

    /// [`Store::restore`]'s reading: every pool and session of `conn` into `registry`.
    fn read_into(
        &mut self,
        conn: &Connection,
        registry: &Registry,
        now: Timestamp,
    ) -> anyhow::Result<(usize, usize, std::collections::HashSet<String>)> {
        let (mut pools, mut sessions) = (0, 0);
        let mut restored_pools = std::collections::HashSet::new();
        let mut current: Option<(PoolKey, crate::pool::PoolGuard)> = None;
        let mut shared: Option<Arc<SessionSettings>> = None;
        self.dead = read_state(
            conn,
            &self.path,
            |name, key, record| {
                let config = PoolConfig {
                    max_pool_size: record.max_pool_size,
                    session: Arc::new(record.session.into()),
                    proxy_urls: record.proxy_urls,
                    proxy_url_template: record.proxy_url_template,
                };
                registry.adopt_pool(name, key, config, record.created_at);
                restored_pools.insert(name.to_owned());
                pools += 1;
                Ok(())
            },
            |pool_name, key, id, record| {
                if current.as_ref().is_none_or(|(k, _)| *k != key) {
                    current = None;
                    let guard = registry.lock_blocking(pool_name).context("a restored pool went missing")?;
                    shared = Some(Arc::clone(&guard.config().session));
                    current = Some((key, guard));
                }
                let Some((_, pool)) = current.as_mut() else { return Ok(()) };
                let settings = SessionSettings::from(record.settings.clone());
                let settings = match &shared {
                    Some(same) if **same == settings => Arc::clone(same),
                    _ => {
                        let fresh = Arc::new(settings);
                        shared = Some(Arc::clone(&fresh));
                        fresh
                    }
                };
                let session = session_from_record(id, record, settings)?;
                pool.adopt(session, false, now).map_err(|e| anyhow::anyhow!("it cannot be restored: {e}"))?;
                sessions += 1;
                Ok(())
            },
        )?;
        drop(current);
        Ok((pools, sessions, restored_pools))
    }

    /// Writes one chunk: a chunk that failed before, or at most [`CHUNK`] sessions' changes taken
    /// from `registry` now, plus a share of the background work (sessions of deleted pools, free
    /// space given back). Blocks: call it from a thread that may block, never from the runtime.
    ///
    /// # Errors
    /// The write failed; what it carried is kept and written first by the next call.
    pub fn write_chunk(&mut self, registry: &Registry) -> anyhow::Result<WriteStats> {
        let (ops, more) = match self.carry.take() {
            Some(ops) => (ops, true),
            None => collect(registry, CHUNK, &mut self.walks),
        };
        match self.commit(&ops) {
            Ok(mut stats) => {
                stats.more |= more;
                if self.dead.is_empty() {
                    // Failing to give space back loses nothing: say so, and go on.
                    if let Some(conn) = &self.conn {
                        match give_back_free_space(conn) {
                            Ok(again) => stats.background |= again,
                            Err(e) => tracing::warn!("cannot give free space of {} back: {e}", self.path.display()),
                        }
                    }
                }
                Ok(stats)
            }
            Err(e) => {
                self.carry = Some(ops);
                // A connection that saw an I/O error may refuse every later write; start afresh.
                self.conn = None;
                Err(e)
            }
        }
    }

    /// Writes chunks until no change is left to write (background work may remain).
    ///
    /// # Errors
    /// A chunk failed to write (it is kept for the next call).
    pub fn write_all(&mut self, registry: &Registry) -> anyhow::Result<WriteStats> {
        let mut total = WriteStats::default();
        loop {
            let stats = self.write_chunk(registry)?;
            total.sessions += stats.sessions;
            total.bytes += stats.bytes;
            if !stats.more {
                return Ok(total);
            }
        }
    }

    fn commit(&mut self, ops: &[Op]) -> anyhow::Result<WriteStats> {
        let file = self.path.display().to_string();
        if self.conn.is_none() {
            self.conn = Some(open_writable(&self.path, self.cache_kib)?);
        }
        let conn = self.conn.as_mut().context("the state is not open")?;
        if ops.is_empty() && self.dead.is_empty() {
            return Ok(WriteStats::default());
        }
        let txn = conn.transaction().with_context(|| format!("cannot write to {file}"))?;
        let mut stats = WriteStats::default();
        let mut newly_dead = Vec::new();
        let mut cleared = None;
        {
            let mut put_session =
                txn.prepare_cached("INSERT OR REPLACE INTO sessions (pool, id, record, crc) VALUES (?1, ?2, ?3, ?4)")?;
            let mut remove_session = txn.prepare_cached("DELETE FROM sessions WHERE pool = ?1 AND id = ?2")?;
            for op in ops {
                match op {
                    Op::RemovePool(name, key) => {
                        txn.execute("DELETE FROM pools WHERE name = ?1 AND key = ?2", params![name, key.0])?;
                        newly_dead.push(key.0);
                    }
                    Op::PutPool(name, key, record) if !self.dead.contains(&key.0) => {
                        let before: Option<i64> = txn
                            .query_row("SELECT key FROM pools WHERE name = ?1", [name], |row| row.get(0))
                            .optional()?;
                        if let Some(old) = before.filter(|old| *old != key.0) {
                            newly_dead.push(old);
                        }
                        txn.execute(
                            "INSERT OR REPLACE INTO pools (name, key, record, crc) VALUES (?1, ?2, ?3, ?4)",
                            params![name, key.0, record, pool_checksum(name, *key, record)],
                        )?;
                        stats.bytes += record.len();
                    }
                    Op::PutPool(..) => {}
                    Op::RemoveSession(key, id) => {
                        remove_session.execute(params![key.0, &**id])?;
                        stats.sessions += 1;
                    }
                    Op::PutSession(key, id, record) => {
                        if self.dead.contains(&key.0) || newly_dead.contains(&key.0) {
                            continue;
                        }
                        put_session.execute(params![key.0, &**id, record, session_checksum(*key, id, record)])?;
                        stats.sessions += 1;
                        stats.bytes += record.len();
                    }
                }
            }
            // Background work, in the same transaction and within the same bound: the sessions of one
            // deleted pool.
            if let Some(&dead) = self.dead.first() {
                let share = CHUNK.saturating_sub(ops.len()).max(SLICE);
                let removed = txn.execute(
                    "DELETE FROM sessions WHERE pool = ?1 AND id IN (SELECT id FROM sessions WHERE pool = ?1 LIMIT ?2)",
                    params![dead, share as i64],
                )?;
                if removed < share {
                    cleared = Some(dead);
                }
                stats.sessions += removed;
            }
        }
        txn.commit().with_context(|| format!("cannot commit to {file}"))?;
        self.dead.extend(newly_dead.iter().copied());
        if let Some(dead) = cleared {
            self.dead.remove(&dead);
        }
        stats.background = !self.dead.is_empty();
        Ok(stats)
    }
}

/// Takes at most `limit` sessions' changes from `registry`: deleted pools first, then each pool's
/// changes, the pools with the fewest first, so a pool with a large backlog does not hold back the
/// small changes of the others. A backlog larger than a chunk is taken in id order, going on where
/// `walks` says the previous chunk stopped. Returns the operations and whether changes were left.
fn collect(registry: &Registry, limit: usize, walks: &mut HashMap<PoolKey, SessionId>) -> (Vec<Op>, bool) {
    let mut ops = Vec::new();
    for (name, key) in registry.take_removed_pools() {
        walks.remove(&key);
        ops.push(Op::RemovePool(name, key));
    }
    // A pool busy with long work (a fill, an import) is left for a later chunk rather than waited on.
    let mut pools: Vec<_> = registry
        .pools()
        .into_iter()
        .filter_map(|pool| {
            let (pending, key) = pool.try_lock().map(|p| (p.pending_changes(), p.key())).ok()?;
            Some((pending, key, pool))
        })
        .collect();
    pools.sort_by_key(|(pending, _, _)| *pending);
    let mut room = limit;
    for (pending, key, pool) in pools {
        let walking = pending > limit || walks.contains_key(&key);
        // While a pool is walked in id order, what changed since the walk began sits at the end of its
        // list: take some of that first, so it waits one chunk, not the whole walk.
        let mut newest_first = if walking { SLICE } else { usize::MAX };
        loop {
            if room == 0 {
                return (ops, true);
            }
            let mut pool = pool.blocking_lock();
            if pool.is_deleted() {
                break;
            }
            let (name, key) = (pool.name().to_owned(), pool.key());
            let config = encode_pool(pool.config(), pool.created_at());
            let slice = room.min(SLICE);
            let mut walk_ended = false;
            let changes = if newest_first > 0 {
                newest_first = newest_first.saturating_sub(slice);
                pool.take_changes(slice)
            } else {
                let (changes, next) = pool.take_changes_by_id(walks.get(&key), slice);
                match next {
                    Some(next) => walks.insert(key, next),
                    None => {
                        walk_ended = true;
                        walks.remove(&key)
                    }
                };
                changes
            };
            if changes.config_changed {
                ops.push(Op::PutPool(name, key, config));
            }
            room -= changes.removed.len() + changes.upserted.len();
            ops.extend(changes.removed.into_iter().map(|id| Op::RemoveSession(key, id)));
            ops.extend(changes.upserted.iter().map(|s| Op::PutSession(key, s.id.clone(), encode_session(s))));
            if !changes.more {
                break;
            }
            if walk_ended {
                // What changed during the walk waits for the next chunk (a new walk, or the list).
                return (ops, true);
            }
        }
    }
    (ops, false)
}

/// Gives free pages back to the file system a step at a time while more than half the file is free.
/// Returns whether another step is due.
fn give_back_free_space(conn: &Connection) -> rusqlite::Result<bool> {
    let free = || conn.query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0));
    let before = free()?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if before * 2 <= pages || before < 256 {
        return Ok(false);
    }
    // The pragma frees one page per step: step it to the end (`execute_batch` steps once).
    let mut statement = conn.prepare(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    Ok(free()? < before)
}

/// Reads every record of the state in `conn`: each pool (through `pool`), then each session of a
/// live pool (through `session`), checking each record's checksum. Returns the keys of deleted pools
/// whose sessions are still stored.
fn read_state(
    conn: &Connection,
    path: &Path,
    mut pool: impl FnMut(&str, PoolKey, PoolRecord) -> anyhow::Result<()>,
    mut session: impl FnMut(&str, PoolKey, &str, SessionRecord) -> anyhow::Result<()>,
) -> anyhow::Result<BTreeSet<i64>> {
    let file = path.display();
    let damaged = |e: rusqlite::Error| anyhow::anyhow!("{file} cannot be read: {e}");
    let mut names: HashMap<i64, String> = HashMap::new();
    let mut statement = conn.prepare("SELECT name, key, record, crc FROM pools ORDER BY name").map_err(damaged)?;
    let mut rows = statement.query([]).map_err(damaged)?;
    while let Some(row) = rows.next().map_err(damaged)? {
        let name: String = row.get(0).map_err(damaged)?;
        let key = PoolKey(row.get(1).map_err(damaged)?);
        let bytes: Vec<u8> = row.get(2).map_err(damaged)?;
        let crc: i64 = row.get(3).map_err(damaged)?;
        if crc != pool_checksum(&name, key, &bytes) {
            bail!("{file} is damaged: the record of pool {name:?} fails its checksum");
        }
        let record: PoolRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("{file} is damaged: the record of pool {name:?} is unreadable"))?;
        pool(&name, key, record).with_context(|| format!("{file}: pool {name:?} cannot be restored"))?;
        names.insert(key.0, name);
    }
    let mut dead = BTreeSet::new();
    let mut statement = conn.prepare("SELECT pool, id, record, crc FROM sessions").map_err(damaged)?;
    let mut rows = statement.query([]).map_err(damaged)?;
    while let Some(row) = rows.next().map_err(damaged)? {
        let key = PoolKey(row.get(0).map_err(damaged)?);
        let id: String = row.get(1).map_err(damaged)?;
        let Some(name) = names.get(&key.0) else {
            dead.insert(key.0);
            continue;
        };
        let bytes =
            row.get_ref(2).map_err(damaged)?.as_blob().map_err(|e| anyhow::anyhow!("{file} cannot be read: {e}"))?;
        let crc: i64 = row.get(3).map_err(damaged)?;
        if crc != session_checksum(key, &id, bytes) {
            bail!("{file} is damaged: the record of session {id:?} in pool {name:?} fails its checksum");
        }
        let record: SessionRecord = serde_json::from_slice(bytes).with_context(|| {
            format!("{file} is damaged: the record of session {id:?} in pool {name:?} is unreadable")
        })?;
        session(name, key, &id, record)
            .with_context(|| format!("{file}: session {id:?} in pool {name:?} cannot be restored"))?;
    }
    Ok(dead)
}

fn session_from_record(id: &str, record: SessionRecord, settings: Arc<SessionSettings>) -> anyhow::Result<Session> {
    let retirement = match record.retired {
        Some(r) => Some(Retirement {
            reason: RetiredReason::parse(&r.reason)
                .with_context(|| format!("unknown retired reason {:?}", r.reason))?,
            at: r.at,
        }),
        None => None,
    };
    Ok(Session {
        id: SessionId::from(id),
        created_at: record.created_at,
        expires_at: record.expires_at,
        settings,
        usage_count: record.usage_count,
        error_score: record.error_score,
        user_data: record.user_data,
        cookies: record.cookies,
        proxy_url: record.proxy_url.map(String::into_boxed_str),
        retirement,
        lease: record.lease.map(|l| Lease { id: l.id, until: l.until }),
    })
}

/// Verifies the state in `dir` without changing it: SQLite's own integrity check of every page,
/// then every record's checksum and contents. For `session-pool check`.
///
/// # Errors
/// The directory is in use, or the state is damaged; the message names the file and what is wrong.
pub fn check(dir: &Path) -> anyhow::Result<CheckStats> {
    let _lock = lock_dir_existing(dir)?;
    let path = dir.join(STATE_FILE);
    anyhow::ensure!(path.exists(), "{} has no state file {STATE_FILE}", dir.display());
    check_format(&dir.join(FORMAT_FILE), &path)?;
    if let Some(tail) = unfinished_wal_tail(&wal_path(&path))? {
        println!("note: {tail}; a server started on it keeps the last complete commit");
    }
    let conn = open_read_only(&path, 16 * 1024)?;
    let checked = check_state(&conn, &path);
    close_read_only(conn, &path);
    checked
}

fn check_state(conn: &Connection, path: &Path) -> anyhow::Result<CheckStats> {
    let file = path.display();
    let mut problems = Vec::new();
    {
        let mut statement = conn.prepare("PRAGMA integrity_check").with_context(|| format!("{file} cannot be read"))?;
        let mut rows = statement.query([]).with_context(|| format!("{file} cannot be read"))?;
        while let Some(row) = rows.next().with_context(|| format!("{file} cannot be read"))? {
            let line: String = row.get(0)?;
            if line != "ok" {
                problems.push(line);
            }
        }
    }
    if !problems.is_empty() {
        bail!("{file} is damaged: {}", problems.join("; "));
    }
    let (mut pools, mut sessions) = (0, 0);
    let dead = read_state(
        conn,
        path,
        |_, _, _| {
            pools += 1;
            Ok(())
        },
        |_, _, _, record| {
            if let Some(r) = &record.retired {
                RetiredReason::parse(&r.reason).with_context(|| format!("unknown retired reason {:?}", r.reason))?;
            }
            sessions += 1;
            Ok(())
        },
    )?;
    let mut stats = CheckStats { pools, sessions, orphans: 0 };
    for key in dead {
        let count: i64 = conn.query_row("SELECT count(*) FROM sessions WHERE pool = ?1", [key], |row| row.get(0))?;
        stats.orphans += usize::try_from(count).unwrap_or(0);
    }
    Ok(stats)
}

/// Opens an existing state read-only, so that a state found damaged is left as it was. SQLite
/// reads a log left by a crash through a shared-memory index (`-shm`) it makes beside the file;
/// [`close_read_only`] removes it again.
fn open_read_only(path: &Path, cache_kib: i64) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot read the state file {}", path.display()))?;
    configure(&conn, cache_kib).with_context(|| format!("cannot read the state file {}", path.display()))?;
    Ok(conn)
}

/// Closes a connection of [`open_read_only`] and removes the index it made, which the writer (in
/// exclusive mode) does not use.
fn close_read_only(conn: Connection, path: &Path) {
    drop(conn);
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let _ = fs::remove_file(PathBuf::from(shm));
}

fn open_writable(path: &Path, cache_kib: i64) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the state file {}", path.display()))?;
    configure(&conn, cache_kib)
        // `auto_vacuum` only takes on a new file (before its first page), so it comes first.
        .and_then(|()| {
            conn.execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE; PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                 PRAGMA journal_size_limit = 67108864;",
            )
        })
        .with_context(|| format!("cannot open the state file {}", path.display()))?;
    Ok(conn)
}

/// Settings of every connection. The writer also takes `EXCLUSIVE` locking: the directory's lock
/// already keeps other processes out, so SQLite keeps its log index in memory, not in a file.
fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))
}

fn wal_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Looks at the write-ahead log a crash left behind, before SQLite opens it: frames written after
/// the last complete commit (a write cut short) are dropped silently by SQLite's recovery, so this
/// says what they were. Follows SQLite's documented WAL format: a 32-byte header, then frames of a
/// 24-byte header and one page, each carrying a running checksum and the header's salts.
fn unfinished_wal_tail(wal: &Path) -> anyhow::Result<Option<String>> {
    let mut bytes = Vec::new();
    match File::open(wal) {
        Ok(mut file) => file.read_to_end(&mut bytes).with_context(|| format!("cannot read {}", wal.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", wal.display())),
    };
    if bytes.len() < 32 {
        return Ok((!bytes.is_empty())
            .then(|| format!("{}: a log of {} bytes, shorter than its header", wal.display(), bytes.len())));
    }
    let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let big_endian = match word(0) {
        0x377f_0682 => false,
        0x377f_0683 => true,
        _ => return Ok(Some(format!("{}: the log's header is not valid; the log is ignored", wal.display()))),
    };
    let page_size = word(8) as usize;
    let salts = (word(16), word(20));
    let mut sums = wal_checksum(big_endian, (0, 0), &bytes[..24]);
    if sums != (word(24), word(28)) {
        return Ok(Some(format!("{}: the log's header fails its checksum; the log is ignored", wal.display())));
    }
    let frame = 24 + page_size;
    let (mut at, mut frames_after_commit) = (32, 0usize);
    let mut torn = false;
    while at + frame <= bytes.len() {
        if (word(at + 8), word(at + 12)) != salts {
            break;
        }
        sums = wal_checksum(big_endian, sums, &bytes[at..at + 8]);
        sums = wal_checksum(big_endian, sums, &bytes[at + 24..at + frame]);
        if sums != (word(at + 16), word(at + 20)) {
            torn = true;
            break;
        }
        frames_after_commit = if word(at + 4) != 0 { 0 } else { frames_after_commit + 1 };
        at += frame;
    }
    let partial_frame = !torn && at < bytes.len() && bytes.len() - at < frame;
    if frames_after_commit == 0 && !torn && !partial_frame {
        return Ok(None);
    }
    let pages = frames_after_commit + usize::from(torn || partial_frame);
    Ok(Some(format!(
        "{}: the last write before the process stopped did not complete ({pages} page(s) of it reached the disk{}); it is rolled back",
        wal.display(),
        if torn || partial_frame { ", the last one torn" } else { "" }
    )))
}

/// SQLite's WAL checksum: over pairs of 32-bit words, in the byte order the log's magic names.
fn wal_checksum(big_endian: bool, (mut s0, mut s1): (u32, u32), data: &[u8]) -> (u32, u32) {
    for pair in data.chunks_exact(8) {
        let read = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s0 = s0.wrapping_add(read(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(read(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

/// Makes `dir` if needed, and takes its lock.
fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    if dir.exists() && !dir.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    lock_dir_existing(dir)
}

fn lock_dir_existing(dir: &Path) -> anyhow::Result<File> {
    if !dir.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another session-pool process (it holds the lock on {})",
            dir.display(),
            lock_path.display()
        ),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", lock_path.display())),
    }
}

fn check_format(format_path: &Path, state_path: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(format_path).with_context(|| {
        format!(
            "cannot read the format file {} that must accompany the state file {}",
            format_path.display(),
            state_path.display()
        )
    })?;
    let record: FormatRecord = serde_json::from_str(&text)
        .with_context(|| format!("the format file {} is not valid", format_path.display()))?;
    if record.format != FORMAT_NAME || record.version != FORMAT_VERSION {
        bail!(
            "the state in {} has format {:?} version {}; this build reads {FORMAT_NAME:?} version {FORMAT_VERSION}",
            state_path.display(),
            record.format,
            record.version
        );
    }
    Ok(())
}

/// Writes the format file atomically: temporary file, fsync, rename, fsync of the directory.
fn write_format(dir: &Path, format_path: &Path) -> anyhow::Result<()> {
    let record = FormatRecord { format: FORMAT_NAME.into(), version: FORMAT_VERSION };
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let context = || format!("cannot write the format file {}", format_path.display());
    let mut file = File::create(&tmp).with_context(context)?;
    file.write_all(&serde_json::to_vec(&record)?).with_context(context)?;
    file.sync_all().with_context(context)?;
    fs::rename(&tmp, format_path).with_context(context)?;
    File::open(dir).and_then(|d| d.sync_all()).with_context(context)?;
    Ok(())
}

/// Writes what changes in `registry` every `interval` until `stop` says so, then everything left,
/// retrying a failed final write a few times. Runs on a thread of its own: it blocks on the disk and
/// on pool locks (a slice at a time), never on the async runtime.
///
/// # Errors
/// The final write failed after its retries; what it could not write is lost with the process.
pub fn write_until_stopped(
    mut store: Store,
    registry: &Registry,
    interval: Duration,
    stop: &std::sync::mpsc::Receiver<()>,
) -> anyhow::Result<WriteStats> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        loop {
            match write_recording(&mut store, registry) {
                Ok(stats) if stats.more || stats.background => continue,
                Ok(_) => break,
                Err(e) => {
                    metrics::counter!("session_pool_persist_errors_total").increment(1);
                    tracing::error!("persisting the state failed (kept for the next cycle): {e:#}");
                    break;
                }
            }
        }
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut total = WriteStats::default();
    let mut attempt = 0;
    loop {
        match write_recording(&mut store, registry) {
            Ok(stats) => {
                total.sessions += stats.sessions;
                total.bytes += stats.bytes;
                if !stats.more {
                    return Ok(total);
                }
            }
            Err(e) if attempt < FINAL_WRITE_RETRIES.len() => {
                metrics::counter!("session_pool_persist_errors_total").increment(1);
                let wait = FINAL_WRITE_RETRIES[attempt];
                tracing::error!("the final write of the state failed; retrying in {wait:?}: {e:#}");
                std::thread::sleep(wait);
                attempt += 1;
            }
            Err(e) => return Err(e.context(format!("the final write failed {} times", attempt + 1))),
        }
    }
}

/// How long to wait before each retry of a failed final write (about 10 s in all, so a disk that
/// an operator frees in that time still gets everything).
const FINAL_WRITE_RETRIES: [Duration; 4] =
    [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(3), Duration::from_secs(5)];

fn write_recording(store: &mut Store, registry: &Registry) -> anyhow::Result<WriteStats> {
    let started = Instant::now();
    let stats = store.write_chunk(registry)?;
    if stats.sessions > 0 || stats.bytes > 0 {
        metrics::histogram!("session_pool_persist_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("session_pool_persist_sessions_written_total").increment(stats.sessions as u64);
        metrics::counter!("session_pool_persist_bytes_written_total").increment(stats.bytes as u64);
    }
    Ok(stats)
}
