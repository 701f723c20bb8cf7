//! The memory store: [`Store::Memory`](super::Store::Memory)'s methods, on the [`Registry`].
//!
//! Each function locks the one pool it touches, applies one pool operation and calls the render
//! closure on the session before the lock is let go, so the answer is the state the call left and
//! no session is copied. The registry makes room under `--max-sessions` before it locks a pool
//! (acquire, create, import); large fills and imports run off the runtime's worker
//! ([`off_the_runtime_if`]).

use chrono::TimeDelta;
use serde_json::{Map, Value};

use super::{off_the_runtime_if, CreateSession, Mark, PoolInfo};
use crate::clock;
use crate::pool::{Imported, Incoming, NewSession, Pool, PoolConfig, PoolCounts, PoolError, Registry, StateFilter};
use crate::session::jar::{self, JarOp};
use crate::session::{merge_patch, Session, Timestamp};

/// A fill above this many sessions runs off the runtime's worker (about 10 ms of work).
const LARGE_FILL: usize = 10_000;

/// An import of more sessions than this runs off the runtime's worker.
const LARGE_IMPORT: usize = 10_000;

pub(super) async fn acquire<R>(
    registry: &Registry,
    pool: &str,
    lease: Option<TimeDelta>,
    render: impl FnOnce(&Session, Timestamp) -> R,
) -> Result<R, PoolError> {
    let started = std::time::Instant::now();
    let (mut guard, now) = registry.lock_for_acquire(pool, clock::now).await?;
    // A fill of many sessions (a pool made large) takes a while: keep it off the other requests.
    off_the_runtime_if(guard.fill_size() > LARGE_FILL, || {
        let answer = guard.acquire(lease, now).map(|session| render(session, now));
        guard.record_acquire_latency(started.elapsed());
        answer
    })
}

pub(super) async fn create<R>(
    registry: &Registry,
    pool: &str,
    new: CreateSession,
    render: impl FnOnce(&Session, Timestamp) -> R,
) -> Result<R, PoolError> {
    registry.make_room(1, clock::now()).await;
    let now = clock::now();
    let mut guard = registry.lock(pool, true, now).await?;
    let CreateSession { id, settings, user_data, cookies, proxy_url } = new;
    let settings = if settings.is_empty() { None } else { Some(settings.resolve(&guard.config().session)?) };
    let session = guard.create(NewSession { id, settings, user_data, cookies, proxy_url }, now)?;
    Ok(render(session, now))
}

pub(super) async fn get<R>(
    registry: &Registry,
    pool: &str,
    id: &str,
    render: impl FnOnce(&Session, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    let session = guard.get(id, now).ok_or_else(|| PoolError::SessionNotFound(id.to_owned()))?;
    Ok(render(session, now))
}

pub(super) async fn list<R>(
    registry: &Registry,
    pool: &str,
    filter: StateFilter,
    after: Option<&str>,
    limit: usize,
    render: impl FnOnce(&[&Session], Option<&str>, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    let (page, next) = guard.list(filter, after, limit, now);
    Ok(render(&page, next.as_deref(), now))
}

pub(super) async fn edit<R>(
    registry: &Registry,
    pool: &str,
    id: &str,
    user_data: Option<Map<String, Value>>,
    ops: Vec<JarOp>,
    render: impl FnOnce(&Session, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    let session = guard.edit(id, now, |data, cookies| {
        if let Some(patch) = user_data {
            merge_patch(data, patch);
        }
        jar::apply(cookies, ops);
    })?;
    Ok(render(session, now))
}

pub(super) async fn delete_session(registry: &Registry, pool: &str, id: &str) -> Result<(), PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    guard.delete(id, now)
}

pub(super) async fn mark<R>(
    registry: &Registry,
    pool: &str,
    id: &str,
    mark: Mark<'_>,
    lease_id: Option<&str>,
    ops: Vec<JarOp>,
    render: impl FnOnce(&Session, bool, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    // The jar first, in the same locked step: a report without ops leaves the session as it is
    // (it is not written again for nothing); `POST .../cookies` always edits.
    if !ops.is_empty() || matches!(mark, Mark::Nothing) {
        guard.edit(id, now, |_, cookies| jar::apply(cookies, ops))?;
    }
    let (session, blocked) = match mark {
        Mark::Good => (guard.mark_good(id, lease_id, now)?, false),
        Mark::Bad => (guard.mark_bad(id, lease_id, now)?, false),
        Mark::Retire => (guard.retire(id, lease_id, now)?, false),
        Mark::Status(report) => {
            let (verdict, session) = guard.report_status(id, &report, lease_id, now)?;
            (session, verdict.blocked)
        }
        Mark::Nothing => (guard.get(id, now).ok_or_else(|| PoolError::SessionNotFound(id.to_owned()))?, false),
    };
    Ok(render(session, blocked, now))
}

pub(super) async fn release<R>(
    registry: &Registry,
    pool: &str,
    id: &str,
    lease_id: &str,
    render: impl FnOnce(&Session, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    let session = guard.release(id, lease_id, now)?;
    Ok(render(session, now))
}

/// The pool as `/v1/pools` shows it, at `now`.
fn info(pool: &mut Pool, now: Timestamp) -> PoolInfo {
    let counts = pool.counts(now);
    PoolInfo { name: pool.name().to_owned(), config: pool.config().clone(), counts, created_at: pool.created_at() }
}

/// Every pool, each locked until all are read, so the list is one instant's.
pub(super) async fn pools(registry: &Registry) -> Vec<PoolInfo> {
    let now = clock::now();
    let mut guards = Vec::new();
    for pool in registry.pools() {
        guards.push(pool.lock_owned().await);
    }
    guards.iter_mut().map(|guard| info(guard, now)).collect()
}

pub(super) async fn pool(registry: &Registry, name: &str) -> Result<PoolInfo, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(name, false, now).await?;
    Ok(info(&mut guard, now))
}

pub(super) async fn put_pool(
    registry: &Registry,
    name: &str,
    config: PoolConfig,
) -> Result<(PoolInfo, bool), PoolError> {
    let now = clock::now();
    let (mut guard, created) = registry.put(name, config, now).await?;
    Ok((info(&mut guard, now), created))
}

pub(super) async fn delete_pool(registry: &Registry, name: &str) -> Result<(), PoolError> {
    registry.delete(name, clock::now()).await
}

pub(super) async fn export<R>(
    registry: &Registry,
    pool: &str,
    render: impl FnOnce(&PoolConfig, &mut dyn Iterator<Item = &Session>, Timestamp) -> R,
) -> Result<R, PoolError> {
    let now = clock::now();
    let mut guard = registry.lock(pool, false, now).await?;
    guard.tick(now);
    let mut sessions = guard.sessions();
    let answer = render(guard.config(), &mut sessions, now);
    Ok(answer)
}

pub(super) async fn import<T: Incoming>(
    registry: &Registry,
    pool: &str,
    config: PoolConfig,
    sessions: Vec<T>,
) -> Result<(Imported<T>, bool), PoolError> {
    let large = sessions.len() > LARGE_IMPORT;
    let (mut guard, created, now) = registry.lock_for_import(pool, config, sessions.len(), clock::now).await?;
    let imported = off_the_runtime_if(large, || guard.import(sessions, now))?;
    Ok((imported, created))
}

/// Each pool's counts, the clock applied to it first (one pool locked at a time), and the sessions
/// held by all.
pub(super) async fn gauges(registry: &Registry) -> (Vec<(String, PoolCounts)>, usize) {
    let now = clock::now();
    let mut gauges = Vec::new();
    for pool in registry.pools() {
        let mut pool = pool.lock().await;
        let counts = pool.counts(now);
        gauges.push((pool.name().to_owned(), counts));
    }
    (gauges, registry.sessions_held())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{Mark, Store};
    use crate::pool::{PoolConfig, PoolError, Registry, RegistryLimits};
    use crate::session::jar::JarOp;
    use crate::session::Cookie;

    /// A memory store whose pools fill to 2 sessions.
    fn store() -> Store {
        let limits = RegistryLimits { max_pools: 10, max_sessions: 100, retention: chrono::TimeDelta::hours(1) };
        let defaults = PoolConfig { max_pool_size: 2, ..PoolConfig::default() };
        Store::Memory(Arc::new(Registry::new(defaults, limits, crate::clock::now())))
    }

    #[tokio::test]
    async fn a_reports_jar_ops_are_applied_with_its_mark_and_reach_a_retired_session() {
        let store = store();
        let id = store.acquire("p", None, |s, _| s.id.to_string()).await.unwrap();
        let put = |value: &str| vec![JarOp::Put(Cookie::simple("a", value))];
        let retire = store.mark("p", &id, Mark::Retire, None, put("1"), |s, _, now| {
            (s.retirement_at(now).is_some(), s.cookies.clone())
        });
        assert_eq!(retire.await.unwrap(), (true, vec![Cookie::simple("a", "1")]));
        let cookies = store.mark("p", &id, Mark::Nothing, None, put("2"), |s, _, _| s.cookies.clone());
        assert_eq!(cookies.await.unwrap(), [Cookie::simple("a", "2")], "a retired session takes the ops");
        let missing = store.mark("p", "nope", Mark::Nothing, None, Vec::new(), |_, _, _| ()).await;
        assert_eq!(missing, Err(PoolError::SessionNotFound("nope".into())));
    }

    #[tokio::test]
    async fn an_export_hands_over_every_session_in_id_order() {
        let store = store();
        store.acquire("p", None, |_, _| ()).await.unwrap();
        let export = store.export("p", |config, sessions, _| {
            (config.max_pool_size, sessions.map(|s| s.id.to_string()).collect::<Vec<_>>())
        });
        let (size, ids) = export.await.unwrap();
        assert_eq!((size, ids.len()), (2, 2));
        assert!(ids.is_sorted());
        let pools = store.pools().await.unwrap();
        let counts: Vec<_> = pools.iter().map(|p| (p.name.as_str(), p.counts.sessions)).collect();
        assert_eq!(counts, [("default", 0), ("p", 2)]);
    }
}
