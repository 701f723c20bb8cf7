//! The registry of named pools, each behind its own lock, and what spans pools: the shared budget of
//! `--max-sessions`, the walk that applies the clock to every pool, and the calls that make room
//! under that budget before they lock a pool.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::TimeDelta;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Pool, PoolConfig, PoolError, PoolKey, SessionBudget, DEFAULT_POOL};
use crate::session::Timestamp;

/// The limits that bound what a registry holds.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// Pools at most, `default` included.
    pub max_pools: usize,
    /// Sessions at most, all pools and retired ones included.
    pub max_sessions: usize,
    /// How long retired sessions stay readable.
    pub retention: TimeDelta,
}

/// The named pools, each behind its own Tokio mutex. The map itself is behind a std `RwLock` that
/// is only held to look up or insert a pool, never across an `.await`.
#[derive(Debug)]
pub struct Registry {
    pools: RwLock<BTreeMap<Arc<str>, Arc<Mutex<Pool>>>>,
    /// Pools deleted since the last persist cycle.
    removed: std::sync::Mutex<Vec<(String, PoolKey)>>,
    defaults: PoolConfig,
    limits: RegistryLimits,
    budget: Arc<SessionBudget>,
    /// Held by the one walk over every pool at a time ([`Registry::tick_all`]).
    walking: Mutex<()>,
}

/// A locked pool; dropping it unlocks.
pub type PoolGuard = OwnedMutexGuard<Pool>;

impl Registry {
    /// A registry holding the `default` pool, configured with `defaults`.
    pub fn new(defaults: PoolConfig, limits: RegistryLimits, now: Timestamp) -> Self {
        let budget = Arc::new(SessionBudget::new(limits.max_sessions));
        let default = Pool::new(DEFAULT_POOL, defaults.clone(), limits.retention, Arc::clone(&budget), now);
        let mut pools = BTreeMap::new();
        pools.insert(Arc::from(DEFAULT_POOL), Arc::new(Mutex::new(default)));
        Self {
            pools: RwLock::new(pools),
            removed: std::sync::Mutex::new(Vec::new()),
            defaults,
            limits,
            budget,
            walking: Mutex::new(()),
        }
    }

    /// The server's default pool configuration.
    pub fn defaults(&self) -> &PoolConfig {
        &self.defaults
    }

    /// Sessions held by all pools together.
    pub fn sessions_held(&self) -> usize {
        self.budget.held()
    }

    /// Locks the pool `name`; with `create`, makes it (with the default config) when missing.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`] without `create`; [`PoolError::LimitReached`] past `--max-pools`.
    pub async fn lock(&self, name: &str, create: bool, now: Timestamp) -> Result<PoolGuard, PoolError> {
        let config = create.then_some(&self.defaults);
        Ok(self.lock_entry(name, config, now).await?.0)
    }

    /// Creates the pool with `config`, or reconfigures it; returns the locked pool and whether it
    /// was created.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`.
    pub async fn put(&self, name: &str, config: PoolConfig, now: Timestamp) -> Result<(PoolGuard, bool), PoolError> {
        let (mut guard, created) = self.lock_entry(name, Some(&config), now).await?;
        if !created {
            guard.reconfigure(config);
        }
        Ok((guard, created))
    }

    /// Locks the pool `name`, creating it with `config` when it does not exist (an existing pool keeps
    /// its own config); returns whether it was created.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`.
    pub async fn lock_or_create(
        &self,
        name: &str,
        config: PoolConfig,
        now: Timestamp,
    ) -> Result<(PoolGuard, bool), PoolError> {
        self.lock_entry(name, Some(&config), now).await
    }

    /// Locks the pool `name`, creating it with `create_with` when missing (without, a missing pool is
    /// [`PoolError::PoolNotFound`]); returns whether it was created.
    async fn lock_entry(
        &self,
        name: &str,
        create_with: Option<&PoolConfig>,
        now: Timestamp,
    ) -> Result<(PoolGuard, bool), PoolError> {
        loop {
            let (pool, created) = match (self.lookup(name), create_with) {
                (Some(pool), _) => (pool, false),
                (None, Some(config)) => self.insert(name, config.clone(), now)?,
                (None, None) => return Err(PoolError::PoolNotFound(name.to_owned())),
            };
            let guard = pool.lock_owned().await;
            // A pool deleted while this call waited for its lock is gone from the map: look again.
            if !guard.deleted {
                return Ok((guard, created));
            }
        }
    }

    /// How many more sessions `--max-sessions` allows now.
    pub fn sessions_left(&self) -> usize {
        self.budget.left()
    }

    /// Whether a call that needs `wanted` new sessions should first [`Registry::make_room`]: fewer
    /// are left, and some pool may hold sessions already past their purge time.
    pub fn should_make_room(&self, wanted: usize, now: Timestamp) -> bool {
        wanted > self.budget.left() && self.budget.release.due(now)
    }

    /// Makes room under `--max-sessions` for `wanted` new sessions when time has freed some: if fewer
    /// are left and some pool may hold sessions past their purge time, applies the clock to every
    /// pool, so another pool's purged sessions no longer count against this call. Call it holding
    /// no pool's lock (it takes each in turn). Costs two atomic reads when nothing is due; calls
    /// that need room at once share one walk.
    pub async fn make_room(&self, wanted: usize, now: Timestamp) {
        if !self.should_make_room(wanted, now) {
            return;
        }
        let _walk = self.walking.lock().await;
        // Another call's walk may have made the room while this one waited.
        if self.should_make_room(wanted, now) {
            self.walk(now).await;
        }
    }

    /// Locks the pool `name` for an acquire, creating it with the defaults when missing. When the
    /// acquire could only fail for want of places under `--max-sessions`, and some pool may hold
    /// sessions past their purge, it first makes that room, holding no pool's lock (a pool this
    /// call creates is created only afterwards, so nothing of the call shows before its one locked
    /// step). Returns the locked pool and the time to acquire at: `clock` read again after a walk.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools` when the pool would be created.
    pub async fn lock_for_acquire(
        &self,
        name: &str,
        clock: impl Fn() -> Timestamp,
    ) -> Result<(PoolGuard, Timestamp), PoolError> {
        let now = clock();
        match self.lock(name, false, now).await {
            Ok(mut guard) => {
                let shortfall = guard.shortfall(now);
                if !self.should_make_room(shortfall, now) {
                    return Ok((guard, now));
                }
                drop(guard);
                self.make_room(shortfall, now).await;
            }
            Err(PoolError::PoolNotFound(_)) => {
                let grows = usize::from(self.defaults.max_pool_size > 0);
                self.make_room(grows, now).await;
            }
            Err(e) => return Err(e),
        }
        let now = clock();
        Ok((self.lock(name, true, now).await?, now))
    }

    /// Locks the pool `name` for an import of `wanted` sessions, after making room for them under
    /// `--max-sessions`. A missing pool is created with `config`, and only when all of them fit;
    /// returns whether it was, and the time to import at (`clock` read after the room was made).
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`, or when a pool to create could not take them
    /// all (nothing is created then).
    pub async fn lock_for_import(
        &self,
        name: &str,
        config: PoolConfig,
        wanted: usize,
        clock: impl Fn() -> Timestamp,
    ) -> Result<(PoolGuard, bool, Timestamp), PoolError> {
        self.make_room(wanted, clock()).await;
        let now = clock();
        match self.lock(name, false, now).await {
            Ok(guard) => Ok((guard, false, now)),
            Err(PoolError::PoolNotFound(_)) => {
                super::import::check_room(wanted, self.sessions_left())?;
                let (guard, created) = self.lock_or_create(name, config, now).await?;
                Ok((guard, created, now))
            }
            Err(e) => Err(e),
        }
    }

    /// Applies the clock to every pool, one at a time, and learns again when the next purge may be.
    pub async fn tick_all(&self, now: Timestamp) {
        let _walk = self.walking.lock().await;
        self.walk(now).await;
    }

    /// [`Registry::tick_all`]'s walk; the caller holds `walking`.
    async fn walk(&self, now: Timestamp) {
        self.budget.release.begin_walk();
        let mut earliest: Option<Timestamp> = None;
        for pool in self.pools() {
            let mut pool = pool.lock().await;
            pool.tick(now);
            earliest = earliest.into_iter().chain(pool.next_release()).min();
        }
        self.budget.release.end_walk(earliest);
    }

    /// Deletes the pool and its sessions; `default` is emptied and reset to the server's defaults
    /// instead.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`].
    pub async fn delete(&self, name: &str, now: Timestamp) -> Result<(), PoolError> {
        let pool = self.lookup(name).ok_or_else(|| PoolError::PoolNotFound(name.to_owned()))?;
        let mut guard = pool.lock_owned().await;
        if guard.deleted {
            return Err(PoolError::PoolNotFound(name.to_owned()));
        }
        let key = guard.key;
        guard.clear();
        if name == DEFAULT_POOL {
            guard.reconfigure(self.defaults.clone());
            guard.created_at = now;
        } else {
            guard.deleted = true;
            self.pools.write().unwrap_or_else(|e| e.into_inner()).remove(name);
        }
        self.removed.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_owned(), key));
        Ok(())
    }

    /// The pools deleted (or, for `default`, reset) since the previous call, for persistence.
    pub fn take_removed_pools(&self) -> Vec<(String, PoolKey)> {
        std::mem::take(&mut *self.removed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a restored pool in place (replacing the empty `default`), whatever `--max-pools` says:
    /// a restore never drops stored state. Blocks on the pool's lock: call it off the runtime.
    pub fn adopt_pool(&self, name: &str, key: PoolKey, config: PoolConfig, created_at: Timestamp) {
        let mut fresh = Pool::new(name, config, self.limits.retention, Arc::clone(&self.budget), created_at);
        fresh.key = key;
        let existing = self.lookup(name);
        match existing {
            Some(pool) => {
                let mut guard = pool.blocking_lock();
                guard.clear();
                *guard = fresh;
            }
            None => {
                let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
                pools.insert(Arc::from(name), Arc::new(Mutex::new(fresh)));
            }
        }
    }

    /// The pool `name`, locked. Blocks: call it off the runtime.
    pub fn lock_blocking(&self, name: &str) -> Option<PoolGuard> {
        self.lookup(name).map(Mutex::blocking_lock_owned)
    }

    /// Every pool, sorted by name (unlocked: lock each to read it).
    pub fn pools(&self) -> Vec<Arc<Mutex<Pool>>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn lookup(&self, name: &str) -> Option<Arc<Mutex<Pool>>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn insert(&self, name: &str, config: PoolConfig, now: Timestamp) -> Result<(Arc<Mutex<Pool>>, bool), PoolError> {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(name) {
            return Ok((Arc::clone(pool), false));
        }
        if pools.len() >= self.limits.max_pools {
            return Err(PoolError::LimitReached(format!(
                "the server holds its maximum of {} pools (--max-pools)",
                self.limits.max_pools
            )));
        }
        let pool = Arc::new(Mutex::new(Pool::new(name, config, self.limits.retention, Arc::clone(&self.budget), now)));
        pools.insert(Arc::from(name), Arc::clone(&pool));
        Ok((pool, true))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pool::tests::{create, secs, t0};
    use crate::pool::{Imported, Incoming, NewSession};
    use crate::session::{self, Session, SessionId, SessionSettings};

    /// A registry of pools that never fill themselves, holding at most `max_sessions` sessions, with
    /// a retention of 10 s.
    fn registry_with(max_sessions: usize) -> Registry {
        let defaults = PoolConfig { max_pool_size: 0, ..PoolConfig::default() };
        Registry::new(defaults, RegistryLimits { max_pools: 10, max_sessions, retention: secs(10) }, t0())
    }

    #[tokio::test]
    async fn room_another_pool_gave_back_by_its_purges_is_found_before_a_refusal() {
        let registry = registry_with(2);
        {
            let mut a = registry.lock("a", true, t0()).await.unwrap();
            create(&mut a, "1", None);
            create(&mut a, "2", None);
            a.retire("1", None, t0()).unwrap();
            a.retire("2", None, t0()).unwrap();
        }
        let (before, after) = (t0() + secs(9), t0() + secs(10));
        // Nothing calls pool `a`, so its purges have not run: both still count.
        assert_eq!(registry.sessions_left(), 0);
        assert!(!registry.should_make_room(1, before), "nothing is due before the retention ends");
        registry.make_room(1, before).await;
        assert_eq!(registry.sessions_left(), 0);
        assert!(registry.should_make_room(1, after));
        assert!(!registry.should_make_room(0, after), "no room is made for a call that needs none");
        registry.make_room(1, after).await;
        assert_eq!(registry.sessions_left(), 2, "the purges ran");
        assert!(!registry.should_make_room(1, after + secs(1_000_000)), "nothing is left to purge");
        let mut b = registry.lock("b", true, after).await.unwrap();
        let new = NewSession { id: Some("3".into()), ..NewSession::default() };
        b.create(new, after).unwrap();
    }

    #[tokio::test]
    async fn a_purge_queued_in_a_visited_pool_during_a_walk_is_not_lost() {
        let registry = Arc::new(registry_with(2));
        {
            let mut b = registry.lock("b", true, t0()).await.unwrap();
            create(&mut b, "b1", None);
            b.retire("b1", None, t0()).unwrap(); // purge due at +10 s
        }
        registry.lock("a", true, t0()).await.unwrap();
        // Pool `b` purges its session itself at +10 s, so the known time (+10 s) is stale after.
        registry.lock("b", false, t0() + secs(11)).await.unwrap().tick(t0() + secs(11));
        // A walk at +11 s visits `a`, then waits for `b`, which this test holds.
        let b = registry.lock("b", false, t0() + secs(11)).await.unwrap();
        let walk = tokio::spawn({
            let registry = Arc::clone(&registry);
            async move { registry.tick_all(t0() + secs(11)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        {
            // Meanwhile `a`, already visited, retires two sessions: purges due at +21 s.
            let mut a = registry.lock("a", false, t0() + secs(11)).await.unwrap();
            for id in ["a1", "a2"] {
                let new = NewSession { id: Some(id.into()), ..NewSession::default() };
                a.create(new, t0() + secs(11)).unwrap();
                a.retire(id, None, t0() + secs(11)).unwrap();
            }
        }
        drop(b);
        walk.await.unwrap();
        let at = t0() + secs(21);
        assert!(registry.should_make_room(1, at), "the purges queued during the walk are known");
        registry.make_room(1, at).await;
        assert_eq!(registry.sessions_left(), 2);
    }

    #[tokio::test]
    async fn an_expiry_in_a_pool_nobody_calls_is_known_as_a_future_release() {
        let registry = registry_with(1);
        let short = SessionSettings { max_age_secs: 5.0, ..SessionSettings::default() };
        registry
            .lock("a", true, t0())
            .await
            .unwrap()
            .create(NewSession { id: Some("1".into()), settings: Some(short), ..NewSession::default() }, t0())
            .unwrap();
        // It expires at +5 s and is purged at +15 s.
        assert!(!registry.should_make_room(1, t0() + secs(14)));
        assert!(registry.should_make_room(1, t0() + secs(15)));
        // A sweep before then learns the time again from the pool.
        registry.tick_all(t0() + secs(6)).await;
        assert_eq!(registry.sessions_left(), 0);
        assert!(!registry.should_make_room(1, t0() + secs(14)));
        assert!(registry.should_make_room(1, t0() + secs(15)));
        registry.make_room(1, t0() + secs(15)).await;
        assert_eq!(registry.sessions_left(), 1);
    }

    /// A registry of `max_sessions` whose new pools fill to `max_pool_size`, with pool `a` full
    /// of retired sessions purged at +10 s.
    async fn registry_full_of_retired(max_sessions: usize, max_pool_size: u32) -> Registry {
        let defaults = PoolConfig { max_pool_size, ..PoolConfig::default() };
        let registry =
            Registry::new(defaults, RegistryLimits { max_pools: 10, max_sessions, retention: secs(10) }, t0());
        let mut a = registry.lock("a", true, t0()).await.unwrap();
        for i in 0..max_sessions {
            let id = create(&mut a, &format!("r{i}"), None);
            a.retire(&id, None, t0()).unwrap();
        }
        drop(a);
        registry
    }

    #[tokio::test]
    async fn an_acquire_in_a_missing_pool_gets_the_places_another_pool_purged() {
        let registry = registry_full_of_retired(2, 1).await;
        let (mut guard, now) = registry.lock_for_acquire("b", || t0() + secs(9)).await.unwrap();
        assert_eq!(guard.acquire(None, now).unwrap_err(), PoolError::NoSessionAvailable, "nothing purged yet");
        drop(guard);
        let later = t0() + secs(10);
        let (mut guard, now) = registry.lock_for_acquire("c", || later).await.unwrap();
        assert_eq!(now, later);
        assert!(guard.acquire(None, now).is_ok(), "the walk gave back a's purged places");
        assert_eq!(registry.sessions_left(), 1);
    }

    #[tokio::test]
    async fn an_acquire_in_a_full_pool_waits_for_the_walk_and_reads_the_clock_after_it() {
        let registry = registry_full_of_retired(1, 1).await;
        registry.lock("b", true, t0()).await.unwrap();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let clock = || t0() + secs(10) + secs(reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as i64);
        let (mut guard, now) = registry.lock_for_acquire("b", clock).await.unwrap();
        assert_eq!(now, t0() + secs(11), "the time of the acquire is read after the walk");
        assert!(guard.acquire(None, now).is_ok());
        drop(guard);
        // With nothing due, no walk and one clock read.
        let (_, now) = registry.lock_for_acquire("b", clock).await.unwrap();
        assert_eq!(now, t0() + secs(12));
    }

    /// A session of an import document, as the tests give it.
    #[derive(Debug, PartialEq)]
    struct Doc {
        id: &'static str,
        max_usage_count: u32,
    }

    impl Incoming for Doc {
        fn id(&self) -> &str {
            self.id
        }

        fn settings(&self, base: &SessionSettings) -> Result<SessionSettings, session::Error> {
            let settings = SessionSettings { max_usage_count: self.max_usage_count, ..base.clone() };
            settings.validate().map(|()| settings)
        }

        fn into_session(self, settings: Arc<SessionSettings>, now: Timestamp) -> Session {
            Session::new(SessionId::from(self.id), settings, now)
        }
    }

    fn doc(ids: &[&'static str]) -> Vec<Doc> {
        ids.iter().map(|&id| Doc { id, max_usage_count: 5 }).collect()
    }

    #[tokio::test]
    async fn an_import_skips_held_ids_and_shares_equal_settings() {
        let registry = registry_with(10);
        let (mut pool, created, now) = registry.lock_for_import("p", PoolConfig::default(), 3, t0).await.unwrap();
        assert!(created);
        create(&mut pool, "b", None);
        let Imported { imported, skipped } = pool.import(doc(&["a", "b", "c"]), now).unwrap();
        assert_eq!((imported, skipped), (2, doc(&["b"])));
        let (a, c) = (pool.get("a", now).unwrap().settings.clone(), pool.get("c", now).unwrap().settings.clone());
        assert!(Arc::ptr_eq(&a, &c), "equal settings are one allocation");
        assert_eq!(a.max_usage_count, 5);
    }

    #[tokio::test]
    async fn an_import_with_an_invalid_session_changes_nothing() {
        let registry = registry_with(10);
        let (mut pool, _, now) = registry.lock_for_import("p", PoolConfig::default(), 3, t0).await.unwrap();
        let mut sessions = doc(&["a", "b", "c"]);
        sessions[2].max_usage_count = 0;
        assert!(matches!(pool.import(sessions, now), Err(PoolError::Invalid(_))));
        assert_eq!((pool.len(), registry.sessions_left()), (0, 10), "nothing stays, no place is kept");
        assert_eq!(pool.pending_changes(), 0, "nothing went in, so there is nothing to write or remove");
        pool.check_invariants();
    }

    #[tokio::test]
    async fn an_import_that_gives_an_id_twice_changes_nothing() {
        let registry = registry_with(10);
        let (mut pool, _, now) = registry.lock_for_import("p", PoolConfig::default(), 3, t0).await.unwrap();
        let err = pool.import(doc(&["a", "b", "a"]), now).unwrap_err();
        assert_eq!(err, PoolError::SessionExists("a".into()));
        assert_eq!((pool.len(), pool.pending_changes(), registry.sessions_left()), (0, 0, 10));
    }

    #[tokio::test]
    async fn an_import_past_the_budget_changes_nothing_and_creates_no_pool() {
        let registry = registry_with(2);
        let err = registry.lock_for_import("p", PoolConfig::default(), 3, t0).await.unwrap_err();
        assert!(matches!(err, PoolError::LimitReached(_)), "{err:?}");
        assert!(registry.lock("p", false, t0()).await.is_err(), "the pool was not created");
        // An existing pool is locked, and the import itself refuses.
        registry.lock("q", true, t0()).await.unwrap();
        let (mut pool, created, now) = registry.lock_for_import("q", PoolConfig::default(), 3, t0).await.unwrap();
        assert!(!created);
        assert!(matches!(pool.import(doc(&["a", "b", "c"]), now), Err(PoolError::LimitReached(_))));
        assert_eq!((pool.len(), pool.pending_changes(), registry.sessions_left()), (0, 0, 2));
    }

    #[tokio::test]
    async fn an_import_gets_the_places_another_pool_purged() {
        let registry = registry_full_of_retired(2, 0).await;
        let later = t0() + secs(10);
        let (mut pool, _, now) = registry.lock_for_import("p", PoolConfig::default(), 2, || later).await.unwrap();
        assert_eq!(pool.import(doc(&["x", "y"]), now).unwrap().imported, 2);
    }
}
