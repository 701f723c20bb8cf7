//! Persistence: the whole state in one redb file under `--data-dir`, written incrementally.
//!
//! # Files
//! - `FORMAT`: `{"format": "session-pool-state", "version": 1}`, written before the database is
//!   created, read before it is opened: a build never opens a state it does not understand.
//! - `state.redb`: two tables, `pools` (name -> config) and `sessions` ((pool, id) -> session), each
//!   value a JSON record. redb's copy-on-write commits make every commit atomic and durable, so what
//!   is on disk is always a complete state, whenever the process dies.
//! - `LOCK`: held with an exclusive file lock while a server uses the directory.
//!
//! # Cost
//! Pools record which sessions changed ([`crate::pool::Pool::take_changes`]); a cycle encodes only
//! those, under each pool's lock in turn, then writes them in one transaction off the async runtime.
//! A cycle thus costs O(changes), not O(sessions). A batch that fails to write is kept and written
//! before the next one, so a full disk delays persistence but never loses a change.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use anyhow::{bail, Context};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::pool::{PoolConfig, Registry};
use crate::session::{Cookie, Lease, RetiredReason, Retirement, Session, SessionId, SessionSettings, Timestamp};

/// The version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "session-pool-state";
/// The database file inside the data directory.
pub const STATE_FILE: &str = "state.redb";
/// The format file inside the data directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// The lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
const SESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sessions");

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

/// The changes of one pool, encoded.
#[derive(Debug, Default)]
struct PoolBatch {
    name: String,
    config: Option<Vec<u8>>,
    reset: bool,
    removed: Vec<SessionId>,
    upserts: Vec<(SessionId, Vec<u8>)>,
}

/// Everything one persist cycle writes, in the order it must be applied.
#[derive(Debug, Default)]
pub struct Batch {
    removed_pools: Vec<String>,
    pools: Vec<PoolBatch>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.removed_pools.is_empty() && self.pools.is_empty()
    }

    /// Sessions this batch writes or removes.
    pub fn sessions(&self) -> usize {
        self.pools.iter().map(|p| p.upserts.len() + p.removed.len()).sum()
    }

    /// `self`, then `later` on top of it.
    fn then(mut self, later: Batch) -> Batch {
        self.removed_pools.extend(later.removed_pools);
        self.pools.extend(later.pools);
        self
    }
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// Sessions written or removed.
    pub sessions: usize,
    /// Bytes of records written.
    pub bytes: usize,
}

/// What a restore found.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreStats {
    /// Pools restored.
    pub pools: usize,
    /// Sessions restored.
    pub sessions: usize,
}

/// The open state of one data directory. Holds the directory's lock until dropped.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    _lock: File,
    pending: StdMutex<Option<Batch>>,
}

impl Store {
    /// Locks `dir` and opens its state, creating both when the directory is new.
    ///
    /// # Errors
    /// The directory is in use by another process; the format file or the state file cannot be
    /// read (the message names the file and the cause, and the file is left as it was).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "the data directory {} is in use by another session-pool process (it holds the lock on {})",
                dir.display(),
                lock_path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        let path = dir.join(STATE_FILE);
        let format_path = dir.join(FORMAT_FILE);
        let db = if path.exists() {
            check_format(&format_path, &path)?;
            Database::open(&path).with_context(|| format!("cannot read the state file {}", path.display()))?
        } else {
            write_format(dir, &format_path)?;
            Database::create(&path).with_context(|| format!("cannot create the state file {}", path.display()))?
        };
        Ok(Self { db, path, _lock: lock, pending: StdMutex::new(None) })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads every pool and session into `registry`. Call before serving `/v1`, from a thread that
    /// may block.
    ///
    /// # Errors
    /// A record that cannot be read; the message names the file, the pool and the session.
    pub fn restore(&self, registry: &Registry, now: Timestamp) -> anyhow::Result<RestoreStats> {
        let file = self.path.display();
        let txn = self.db.begin_read().with_context(|| format!("cannot read the state file {file}"))?;
        let mut stats = RestoreStats::default();
        let mut restored_pools = std::collections::HashSet::new();
        match txn.open_table(POOLS) {
            Ok(pools) => {
                for entry in pools.iter().with_context(|| format!("cannot read the pools of {file}"))? {
                    let (name, value) = entry.with_context(|| format!("cannot read the pools of {file}"))?;
                    let name = name.value();
                    let record: PoolRecord = serde_json::from_slice(value.value())
                        .with_context(|| format!("{file}: the record of pool {name:?} is unreadable"))?;
                    let config = PoolConfig {
                        max_pool_size: record.max_pool_size,
                        session: Arc::new(record.session.into()),
                        proxy_urls: record.proxy_urls,
                        proxy_url_template: record.proxy_url_template,
                    };
                    registry.adopt_pool(name, config, record.created_at);
                    restored_pools.insert(name.to_owned());
                    stats.pools += 1;
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read the pools of {file}")),
        }
        match txn.open_table(SESSIONS) {
            Ok(sessions) => {
                let mut current: Option<(String, tokio::sync::OwnedMutexGuard<crate::pool::Pool>)> = None;
                let mut shared: Option<Arc<SessionSettings>> = None;
                for entry in sessions.iter().with_context(|| format!("cannot read the sessions of {file}"))? {
                    let (key, value) = entry.with_context(|| format!("cannot read the sessions of {file}"))?;
                    let (pool_name, id) = key.value();
                    let record: SessionRecord = serde_json::from_slice(value.value()).with_context(|| {
                        format!("{file}: the record of session {id:?} in pool {pool_name:?} is unreadable")
                    })?;
                    if current.as_ref().is_none_or(|(name, _)| name != pool_name) {
                        let guard = registry.pool_for_restore(pool_name, now);
                        shared = Some(Arc::clone(&guard.config().session));
                        current = Some((pool_name.to_owned(), guard));
                    }
                    let Some((_, pool)) = current.as_mut() else { continue };
                    let settings = SessionSettings::from(record.settings);
                    let settings = match &shared {
                        Some(same) if **same == settings => Arc::clone(same),
                        _ => {
                            let fresh = Arc::new(settings);
                            shared = Some(Arc::clone(&fresh));
                            fresh
                        }
                    };
                    let session = Session {
                        id: SessionId::from(id),
                        created_at: record.created_at,
                        expires_at: record.expires_at,
                        settings,
                        usage_count: record.usage_count,
                        error_score: record.error_score,
                        user_data: record.user_data,
                        cookies: record.cookies,
                        proxy_url: record.proxy_url.map(String::into_boxed_str),
                        retirement: match record.retired {
                            Some(r) => Some(Retirement {
                                reason: RetiredReason::parse(&r.reason).with_context(|| {
                                    format!("{file}: session {id:?} has an unknown retired reason {:?}", r.reason)
                                })?,
                                at: r.at,
                            }),
                            None => None,
                        },
                        lease: record.lease.map(|l| Lease { id: l.id, until: l.until }),
                    };
                    pool.adopt(session, false, now)
                        .with_context(|| format!("{file}: session {id:?} in pool {pool_name:?} cannot be restored"))?;
                    stats.sessions += 1;
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read the sessions of {file}")),
        }
        // What was just read is on disk already; a pool that had no record (the `default` of a new
        // directory, or a pool known only from its sessions) still has its config to write.
        for pool in registry.pools() {
            let mut pool = pool.blocking_lock();
            pool.take_changes();
            if !restored_pools.contains(pool.name()) {
                pool.mark_config_changed();
            }
        }
        registry.take_removed_pools();
        Ok(stats)
    }

    /// Collects what changed in `registry` since the last call, encoding it under each pool's lock.
    pub async fn collect(&self, registry: &Registry) -> Batch {
        let mut batch = Batch { removed_pools: registry.take_removed_pools(), pools: Vec::new() };
        for pool in registry.pools() {
            let mut pool = pool.lock().await;
            let name = pool.name().to_owned();
            let config = encode_pool(pool.config(), pool.created_at());
            let changes = pool.take_changes();
            if changes.is_empty() {
                continue;
            }
            batch.pools.push(PoolBatch {
                name,
                config: changes.config_changed.then_some(config),
                reset: changes.reset,
                removed: changes.removed,
                upserts: changes.upserted.iter().map(|s| (s.id.clone(), encode_session(s))).collect(),
            });
        }
        batch
    }

    /// Writes `batch` (after any batch a previous call failed to write) in one durable transaction.
    /// Blocks: call it off the async runtime.
    ///
    /// # Errors
    /// The write failed; the batch is kept and retried by the next call.
    pub fn write(&self, batch: Batch) -> anyhow::Result<WriteStats> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let batch = match pending.take() {
            Some(earlier) => earlier.then(batch),
            None => batch,
        };
        if batch.is_empty() {
            return Ok(WriteStats::default());
        }
        match self.write_now(&batch) {
            Ok(stats) => Ok(stats),
            Err(e) => {
                *pending = Some(batch);
                Err(e)
            }
        }
    }

    fn write_now(&self, batch: &Batch) -> anyhow::Result<WriteStats> {
        let file = self.path.display();
        let txn = self.db.begin_write().with_context(|| format!("cannot write to {file}"))?;
        let mut stats = WriteStats::default();
        {
            let mut pools = txn.open_table(POOLS)?;
            let mut sessions = txn.open_table(SESSIONS)?;
            for name in &batch.removed_pools {
                pools.remove(name.as_str())?;
                remove_pool_sessions(&mut sessions, name)?;
            }
            for pool in &batch.pools {
                if let Some(config) = &pool.config {
                    pools.insert(pool.name.as_str(), config.as_slice())?;
                    stats.bytes += config.len();
                }
                if pool.reset {
                    remove_pool_sessions(&mut sessions, &pool.name)?;
                }
                for id in &pool.removed {
                    sessions.remove((pool.name.as_str(), &**id))?;
                }
                for (id, record) in &pool.upserts {
                    sessions.insert((pool.name.as_str(), &**id), record.as_slice())?;
                    stats.bytes += record.len();
                }
                stats.sessions += pool.removed.len() + pool.upserts.len();
            }
        }
        txn.commit().with_context(|| format!("cannot commit to {file}"))?;
        Ok(stats)
    }
}

fn remove_pool_sessions(sessions: &mut redb::Table<'_, (&str, &str), &[u8]>, pool: &str) -> anyhow::Result<()> {
    // Session ids are ASCII (`[A-Za-z0-9._~-]`), so every id of the pool sorts below "\u{7f}".
    sessions.retain_in((pool, "")..(pool, "\u{7f}"), |_, _| false)?;
    Ok(())
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

/// One persist cycle: collect, write off the runtime, record metrics. Errors are logged; the batch
/// is kept for the next cycle.
pub async fn persist_once(store: &Arc<Store>, registry: &Registry) -> anyhow::Result<WriteStats> {
    let started = Instant::now();
    let batch = store.collect(registry).await;
    let writer = Arc::clone(store);
    let stats = tokio::task::spawn_blocking(move || writer.write(batch)).await.context("the persist task failed")??;
    if stats.sessions > 0 || stats.bytes > 0 {
        metrics::histogram!("session_pool_persist_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("session_pool_persist_sessions_written_total").increment(stats.sessions as u64);
        metrics::counter!("session_pool_persist_bytes_written_total").increment(stats.bytes as u64);
    }
    Ok(stats)
}
