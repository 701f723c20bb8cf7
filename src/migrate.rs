//! `session-pool migrate --from SOURCE --to TARGET`: copies every pool (its config and all its
//! sessions) from one store to another, through the own export form, all or nothing.
//!
//! Each side is a data directory (the memory store's persisted state) or a `redis://` / `rediss://`
//! URL. The target must hold none of the source's pools with sessions (an empty pool, such as a fresh
//! `default`, is fine: it takes the source's config). When an import fails midway, the pools the
//! migration created on the target are deleted again (and those it reconfigured are put back), and
//! a directory target is not written at all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{self, Config, RedisUrl};
use crate::pool::{PoolConfig, Registry};
use crate::store::{self, Store};
use crate::{api, clock, interop, persist};

/// How long the migration waits for a Redis server to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one call of the migration waits for Redis. The import of a pool is one call that
/// takes seconds for 100k sessions; under the server's 2 s the client would give up while Redis
/// applies it anyway, and report a failure for a pool that was written.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// What a migration copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Pools copied (configs), empty ones included.
    pub pools: usize,
    /// Sessions copied.
    pub sessions: usize,
}

/// One side of a migration, as given on the command line.
#[derive(Debug, Clone)]
enum Side {
    Dir(PathBuf),
    Redis(RedisUrl),
}

impl Side {
    /// A `redis://` / `rediss://` URL is Redis; anything else is a data directory.
    fn parse(raw: &str) -> anyhow::Result<Self> {
        let scheme = raw.trim().split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some("redis" | "rediss")) {
            return match raw.parse::<config::Store>() {
                Ok(config::Store::Redis(url)) => Ok(Self::Redis(url)),
                Ok(config::Store::Memory) => unreachable!("a URL is not `memory`"),
                Err(e) => bail!("{raw:?}: {e}"),
            };
        }
        Ok(Self::Dir(PathBuf::from(raw)))
    }
}

/// A side opened: the store, and for a directory its persisted state and registry.
struct Opened {
    store: Store,
    disk: Option<(persist::Store, Arc<Registry>)>,
    label: String,
}

async fn open(side: &Side, config: &Config) -> anyhow::Result<Opened> {
    match side {
        Side::Dir(dir) => {
            let registry = Arc::new(api::memory_registry(config));
            let disk = tokio::task::block_in_place(|| {
                let mut disk = persist::Store::open(dir, config.store_cache_mb)?;
                disk.restore(&registry, clock::now())?;
                anyhow::Ok(disk)
            })
            .with_context(|| format!("{}", dir.display()))?;
            Ok(Opened {
                store: Store::Memory(Arc::clone(&registry)),
                disk: Some((disk, registry)),
                label: dir.display().to_string(),
            })
        }
        Side::Redis(url) => {
            let redis = store::redis::RedisStore::new(url, config.redis_settings(RESPONSE_TIMEOUT))?;
            tokio::time::timeout(CONNECT_TIMEOUT, redis.connect())
                .await
                .map_err(|_| anyhow::anyhow!("{url}: Redis cannot be reached (waited {CONNECT_TIMEOUT:?})"))?;
            Ok(Opened { store: Store::Redis(Box::new(redis)), disk: None, label: url.to_string() })
        }
    }
}

/// Copies every pool from `from` to `to` (each a data directory or a Redis URL), with the server
/// settings of `config` (limits, retention, defaults, `--redis-key-prefix`).
///
/// # Errors
/// A side that cannot be opened or reached; a target that already holds one of the source's pools
/// with sessions (nothing is changed); an export or import that fails (what was created on the
/// target is removed again).
pub async fn migrate(config: &Config, from: &str, to: &str) -> anyhow::Result<Summary> {
    config.validate()?;
    let (from, to) = (Side::parse(from)?, Side::parse(to)?);
    let source = open(&from, config).await.context("the source")?;
    let mut target = open(&to, config).await.context("the target")?;

    let pools = source.store.pools().await.map_err(|e| anyhow::anyhow!("{}: listing the pools: {e}", source.label))?;
    let existing =
        target.store.pools().await.map_err(|e| anyhow::anyhow!("{}: listing the pools: {e}", target.label))?;
    // Pools of the target the migration imports into: they must be empty; their config to put back.
    let mut reused = Vec::new();
    for pool in &pools {
        if let Some(held) = existing.iter().find(|p| p.name == pool.name) {
            if held.counts.sessions > 0 {
                bail!(
                    "the target {} already holds the pool {:?} with {} sessions; nothing was migrated",
                    target.label,
                    pool.name,
                    held.counts.sessions
                );
            }
            reused.push((held.name.clone(), held.config.clone()));
        }
    }

    let mut created = Vec::new();
    let copied = copy_all(&source, &target, &pools, &reused, &mut created).await;
    match copied {
        Ok(summary) => {
            if let Some((disk, registry)) = &mut target.disk {
                let label = &target.label;
                tokio::task::block_in_place(|| disk.write_all(registry))
                    .with_context(|| format!("{label}: writing the migrated state"))?;
            }
            Ok(summary)
        }
        Err(e) => {
            // A directory target is never written, but its registry is undone all the same.
            if let Err(undo) = undo(&target.store, &created, &reused).await {
                return Err(e.context(format!("undoing the migration on {} failed too: {undo:#}", target.label)));
            }
            Err(e.context(format!("the pools created on {} were deleted again", target.label)))
        }
    }
}

async fn copy_all(
    source: &Opened,
    target: &Opened,
    pools: &[store::PoolInfo],
    reused: &[(String, PoolConfig)],
    created: &mut Vec<String>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    for pool in pools {
        let name = pool.name.as_str();
        let document = source
            .store
            .export(name, |config, sessions, now| api::transfer::own_export_value(config, sessions, name, now))
            .await
            .map_err(|e| anyhow::anyhow!("{}: exporting the pool {name:?}: {e}", source.label))?
            .with_context(|| format!("exporting the pool {name:?}"))?;
        let interop::ImportDocument { pool_config, sessions, .. } =
            tokio::task::block_in_place(|| interop::parse_import(document, target.store.defaults()))
                .map_err(|e| anyhow::anyhow!("the pool {name:?}: its export does not read back: {e}"))?;
        let count = sessions.len();
        if reused.iter().any(|(reused, _)| reused == name) {
            target
                .store
                .put_pool(name, pool_config.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{}: configuring the pool {name:?}: {e}", target.label))?;
        }
        let (imported, was_created) = target
            .store
            .import(name, pool_config, sessions)
            .await
            .map_err(|e| anyhow::anyhow!("{}: importing the pool {name:?}: {e}", target.label))?;
        if was_created {
            created.push(name.to_owned());
        }
        if imported.imported != count {
            bail!("{}: the pool {name:?}: {} of {count} sessions imported", target.label, imported.imported);
        }
        summary.pools += 1;
        summary.sessions += count;
    }
    Ok(summary)
}

/// Deletes the pools `created`, and empties the pools `reused` back to the config they had.
async fn undo(target: &Store, created: &[String], reused: &[(String, PoolConfig)]) -> anyhow::Result<()> {
    for name in created {
        target.delete_pool(name).await.map_err(|e| anyhow::anyhow!("deleting the pool {name:?}: {e}"))?;
    }
    for (name, config) in reused {
        target.delete_pool(name).await.map_err(|e| anyhow::anyhow!("emptying the pool {name:?}: {e}"))?;
        target.put_pool(name, config.clone()).await.map_err(|e| anyhow::anyhow!("restoring the pool {name:?}: {e}"))?;
    }
    Ok(())
}
