//! `session-pool migrate --from SOURCE --to TARGET`: copies every pool (its config and all its
//! sessions) from one store to another, through the own export form, all or nothing.
//!
//! Each side is a data directory (the memory store's persisted state) or a `redis://` / `rediss://`
//! URL. The target must hold none of the source's pools with sessions (an empty pool, such as a fresh
//! `default`, is fine: it takes the source's config). When an import fails midway, every source
//! pool the target lacked before is deleted again, whether or not its import answered (one that
//! timed out may have been applied all the same), those it reconfigured are put back, and a
//! directory target is not written at all.
//!
//! No server may write to either side meanwhile: the pool list and an export read Redis page by
//! page, not as a snapshot, and undoing deletes pools by name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{self, Config, RedisUrl};
use crate::pool::{PoolConfig, PoolError, Registry};
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
                .map_err(|_| anyhow::anyhow!("{url}: Redis cannot be reached (waited {CONNECT_TIMEOUT:?})"))?
                .with_context(|| url.to_string())?;
            Ok(Opened { store: Store::Redis(Box::new(redis)), disk: None, label: url.to_string() })
        }
    }
}

/// Copies every pool from `from` to `to` (each a data directory or a Redis URL), with the server
/// settings of `config` (limits, retention, defaults, `--redis-key-prefix`).
///
/// # Errors
/// A side that cannot be opened or reached; a target that already holds one of the source's pools
/// with sessions (nothing is changed); an export or import that fails (the source's pools the
/// target lacked are deleted again, and the message says what undoing did and what it could not).
pub async fn migrate(config: &Config, from: &str, to: &str) -> anyhow::Result<Summary> {
    config.validate()?;
    let (from, to) = (Side::parse(from)?, Side::parse(to)?);
    let source = open(&from, config).await.context("the source")?;
    let mut target = open(&to, config).await.context("the target")?;

    let pools = source.store.pools().await.map_err(|e| anyhow::anyhow!("{}: listing the pools: {e}", source.label))?;
    let existing =
        target.store.pools().await.map_err(|e| anyhow::anyhow!("{}: listing the pools: {e}", target.label))?;
    let plan = Plan::of(&pools, &existing).map_err(|(name, sessions)| {
        anyhow::anyhow!(
            "the target {} already holds the pool {name:?} with {sessions} sessions; nothing was migrated",
            target.label
        )
    })?;

    let copied = copy_all(&source, &target, &pools, &plan.reused).await;
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
            let undone = undo(&target.store, &plan).await;
            let only = if undone.failed.is_empty() { "" } else { " only in part" };
            Err(e.context(format!("the migration was undone on {}{only} ({undone})", target.label)))
        }
    }
}

/// What the target held of the source's pools before the migration, which is what undoing it
/// restores.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Source pools the target did not hold: undo deletes each of them, as an import that answered
    /// an error (a timeout) may have been applied all the same.
    missing: Vec<String>,
    /// Source pools the target held empty, with the config to put back.
    reused: Vec<(String, PoolConfig)>,
}

impl Plan {
    /// Splits the source's `pools` by whether the target held them (`existing`).
    ///
    /// # Errors
    /// The name and session count of the first pool the target holds with sessions.
    fn of(pools: &[store::PoolInfo], existing: &[store::PoolInfo]) -> Result<Self, (String, usize)> {
        let mut plan = Self::default();
        for pool in pools {
            match existing.iter().find(|p| p.name == pool.name) {
                Some(held) if held.counts.sessions > 0 => return Err((held.name.clone(), held.counts.sessions)),
                Some(held) => plan.reused.push((held.name.clone(), held.config.clone())),
                None => plan.missing.push(pool.name.clone()),
            }
        }
        Ok(plan)
    }
}

async fn copy_all(
    source: &Opened,
    target: &Opened,
    pools: &[store::PoolInfo],
    reused: &[(String, PoolConfig)],
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
        let (imported, _) = target
            .store
            .import(name, pool_config, sessions)
            .await
            .map_err(|e| anyhow::anyhow!("{}: importing the pool {name:?}: {e}", target.label))?;
        if imported.imported != count {
            bail!("{}: the pool {name:?}: {} of {count} sessions imported", target.label, imported.imported);
        }
        summary.pools += 1;
        summary.sessions += count;
    }
    Ok(summary)
}

/// What undoing a migration did on the target.
#[derive(Debug, Default, PartialEq)]
struct Undone {
    /// Pools deleted again.
    deleted: Vec<String>,
    /// Pools emptied and given back their config.
    restored: Vec<String>,
    /// What could not be done, each naming the pool and the error.
    failed: Vec<String>,
}

impl std::fmt::Display for Undone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |names: &[String]| names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.deleted.is_empty() {
            parts.push(format!("deleted the pools {}", names(&self.deleted)));
        }
        if !self.restored.is_empty() {
            parts.push(format!("emptied the pools {} and gave them back their config", names(&self.restored)));
        }
        if parts.is_empty() {
            parts.push("no pool had been written".to_owned());
        }
        parts.extend(self.failed.iter().map(|failed| format!("could not {failed}")));
        f.write_str(&parts.join("; "))
    }
}

/// Deletes the pools the target lacked (one that is not there was never made), and empties the
/// pools it reused back to the config they had. Goes on past a failure, so the answer says all
/// that is left to clean up.
async fn undo(target: &Store, plan: &Plan) -> Undone {
    let mut undone = Undone::default();
    for name in &plan.missing {
        match target.delete_pool(name).await {
            Ok(()) => undone.deleted.push(name.clone()),
            Err(PoolError::PoolNotFound(_)) => {}
            Err(e) => undone.failed.push(format!("delete the pool {name:?}: {e}")),
        }
    }
    for (name, config) in &plan.reused {
        let restored = match target.delete_pool(name).await {
            Ok(()) | Err(PoolError::PoolNotFound(_)) => target.put_pool(name, config.clone()).await.map(drop),
            Err(e) => Err(e),
        };
        match restored {
            Ok(()) => undone.restored.push(name.clone()),
            Err(e) => undone.failed.push(format!("empty and reconfigure the pool {name:?}: {e}")),
        }
    }
    undone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CreateSession;

    /// A memory store holding `default` and `pools`, each with that many sessions and its own
    /// `max_pool_size` (the number of sessions plus 10), to tell configs apart.
    async fn store_with(pools: &[(&str, u32)]) -> Store {
        let store = Store::Memory(Arc::new(api::memory_registry(&Config::default())));
        for &(name, sessions) in pools {
            let config = PoolConfig { max_pool_size: sessions + 10, ..Config::default().pool_defaults() };
            store.put_pool(name, config).await.expect("put_pool");
            for _ in 0..sessions {
                store.create(name, CreateSession::default(), |_, _| ()).await.expect("create");
            }
        }
        store
    }

    async fn names(store: &Store) -> Vec<String> {
        store.pools().await.expect("pools").into_iter().map(|p| p.name).collect()
    }

    #[tokio::test]
    async fn the_plan_reuses_the_empty_pools_the_target_held_and_refuses_one_with_sessions() {
        let source = store_with(&[("alpha", 2), ("beta", 1)]).await.pools().await.expect("pools");
        let target = store_with(&[("beta", 0), ("other", 3)]).await.pools().await.expect("pools");
        let plan = Plan::of(&source, &target).expect("no pool of the target holds sessions");
        assert_eq!(plan.missing, ["alpha"]);
        let reused: Vec<(&str, u32)> =
            plan.reused.iter().map(|(name, config)| (name.as_str(), config.max_pool_size)).collect();
        let default_size = Config::default().pool_defaults().max_pool_size;
        assert_eq!(reused, [("beta", 10), ("default", default_size)], "the target's configs, to put back");

        let target = store_with(&[("beta", 1)]).await.pools().await.expect("pools");
        assert_eq!(Plan::of(&source, &target), Err(("beta".to_owned(), 1)));
    }

    #[tokio::test]
    async fn undo_deletes_a_pool_the_target_lacked_even_when_its_import_did_not_answer_ok() {
        let source = store_with(&[("alpha", 2), ("beta", 1)]).await;
        let target = store_with(&[]).await;
        let pools = source.pools().await.expect("pools");
        let plan = Plan::of(&pools, &target.pools().await.expect("pools")).expect("plan");
        // alpha's import went in though the migration saw an error (a Redis client timing out while
        // Redis applies it); beta's never ran.
        let export = source
            .export("alpha", |config, sessions, now| api::transfer::own_export_value(config, sessions, "alpha", now));
        let document = export.await.expect("export").expect("JSON");
        let interop::ImportDocument { pool_config, sessions, .. } =
            interop::parse_import(document, target.defaults()).expect("the export reads back");
        let (imported, _) = target.import("alpha", pool_config, sessions).await.expect("import");
        assert_eq!(imported.imported, 2);
        assert_eq!(names(&target).await, ["alpha", "default"]);

        let undone = undo(&target, &plan).await;
        assert_eq!(names(&target).await, ["default"], "alpha is gone again: {undone}");
        assert_eq!(
            undone.to_string(),
            r#"deleted the pools "alpha"; emptied the pools "default" and gave them back their config"#
        );
    }
}
