//! The restore: every pool and session of the state file into the registry, before `/v1` serves.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use rusqlite::Connection;

use super::files::{close_read_only, open_writable};
use super::records::{read_state, session_from_record};
use super::write::Op;
use super::Store;
use crate::pool::{PoolConfig, PoolGuard, PoolKey, Registry};
use crate::session::{SessionSettings, Timestamp};

/// What a restore found.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreStats {
    /// Pools restored.
    pub pools: usize,
    /// Sessions restored.
    pub sessions: usize,
}

impl Store {
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
    ) -> anyhow::Result<(usize, usize, HashSet<String>)> {
        let (mut pools, mut sessions) = (0, 0);
        let mut restored_pools = HashSet::new();
        let mut current: Option<(PoolKey, PoolGuard)> = None;
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
                pool.adopt(session, now).map_err(|e| anyhow::anyhow!("it cannot be restored: {e}"))?;
                sessions += 1;
                Ok(())
            },
        )?;
        drop(current);
        Ok((pools, sessions, restored_pools))
    }
}
