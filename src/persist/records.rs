//! The records of the state file: its two tables, the JSON record of a pool and of a session, and
//! the CRC-32 stored beside each. The writer encodes them; [`read_state`] decodes every one, checking
//! its checksum, for the restore and for `check`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::pool::{PoolConfig, PoolKey};
use crate::session::{Cookie, Lease, RetiredReason, Retirement, Session, SessionId, SessionSettings, Timestamp};

/// The tables of a new state file, created with it.
pub(super) const SCHEMA: &str = "
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SettingsRecord {
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
pub(super) struct PoolRecord {
    pub(super) max_pool_size: u32,
    pub(super) session: SettingsRecord,
    #[serde(default)]
    pub(super) proxy_urls: Vec<String>,
    #[serde(default)]
    pub(super) proxy_url_template: Option<String>,
    pub(super) created_at: Timestamp,
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
pub(super) struct SessionRecord {
    created_at: Timestamp,
    expires_at: Timestamp,
    pub(super) settings: SettingsRecord,
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

/// A session's record, as stored under its id.
pub(super) fn encode_session(s: &Session) -> Vec<u8> {
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

/// A pool's record, as stored under its name.
pub(super) fn encode_pool(config: &PoolConfig, created_at: Timestamp) -> Vec<u8> {
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

pub(super) fn session_checksum(pool: PoolKey, id: &str, record: &[u8]) -> i64 {
    let mut key = pool.0.to_le_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    checksum(&key, record)
}

pub(super) fn pool_checksum(name: &str, pool: PoolKey, record: &[u8]) -> i64 {
    let mut key = name.as_bytes().to_vec();
    key.extend_from_slice(&pool.0.to_le_bytes());
    checksum(&key, record)
}

/// Reads every record of the state in `conn`: each pool (through `pool`), then each session of a
/// live pool (through `session`), checking each record's checksum. Returns the keys of deleted pools
/// whose sessions are still stored.
pub(super) fn read_state(
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

impl SessionRecord {
    /// The session's retirement, if any. The one place that reads a stored reason: the restore and
    /// `check` refuse the same records.
    pub(super) fn retirement(&self) -> anyhow::Result<Option<Retirement>> {
        let Some(r) = &self.retired else { return Ok(None) };
        let reason =
            RetiredReason::parse(&r.reason).with_context(|| format!("unknown retired reason {:?}", r.reason))?;
        Ok(Some(Retirement { reason, at: r.at }))
    }
}

/// The session `id` from its record, with `settings` (which the restore shares among sessions whose
/// settings are equal).
pub(super) fn session_from_record(
    id: &str,
    record: SessionRecord,
    settings: Arc<SessionSettings>,
) -> anyhow::Result<Session> {
    let retirement = record.retirement()?;
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
