//! The writer: changes taken from the pools in bounded chunks, each committed in one transaction,
//! with the background work (sessions of deleted pools, free space given back) shared out among
//! them; and the thread that runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

use super::files::open_writable;
use super::records::{encode_pool, encode_session, pool_checksum, session_checksum};
use super::Store;
use crate::metric_names as names;
use crate::pool::{PoolKey, Registry};
use crate::session::SessionId;

/// The most sessions one transaction writes or removes.
pub const CHUNK: usize = 10_000;
/// The most sessions taken (and encoded) from a pool in one hold of its lock.
const SLICE: usize = 256;
/// Pages given back to the file system per chunk while the file is mostly free space (4 KiB pages).
const VACUUM_PAGES: u32 = 4_096;

/// One change to the stored state. A chunk applies its operations in the order they were taken.
#[derive(Debug)]
pub(super) enum Op {
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

impl Store {
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
                    metrics::counter!(names::PERSIST_ERRORS).increment(1);
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
                metrics::counter!(names::PERSIST_ERRORS).increment(1);
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
        metrics::histogram!(names::PERSIST_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(names::PERSIST_SESSIONS_WRITTEN).increment(stats.sessions as u64);
        metrics::counter!(names::PERSIST_BYTES_WRITTEN).increment(stats.bytes as u64);
    }
    Ok(stats)
}
