//! The store boundary: the one interface the HTTP handlers use for every pool operation, whatever
//! keeps the pools.
//!
//! [`Store`] is an enum, not a trait object, so each method can take the handler's render closure as
//! a generic: the memory store ([`Store::Memory`], the [`Registry`] of [`crate::pool`], code in
//! `memory`) calls it on the session while the pool is locked, so an answer is written from the
//! state its own call left, without a copy of the session. The closure also gets the `now` the
//! operation ran at, so a handler never reads the clock to render: a store whose clock is elsewhere
//! (a Redis server's `TIME`) renders at its own time. Adding a store is one more variant and one
//! more match arm per method.
//!
//! What a call brings for a session's cookie jar comes as [`JarOp`]s, parsed before the store is
//! called ([`crate::session::jar::set_cookie_ops`]) and applied by the store in the same step as the
//! operation ([`crate::session::jar::apply`]).
//!
//! Three details a second store has to match:
//! - [`crate::session::jar::set_cookie_ops`] takes the `now` an already expired cookie is judged at
//!   (it returns [`crate::session::jar::SetCookieOps`], the ops and the ignored headers): the handler
//!   reads its clock for that, and only when the call carries `Set-Cookie` headers;
//! - [`Mark::Nothing`] edits the session even with no ops, as `POST .../cookies` always did (the memory
//!   store writes it again); a report without ops does not;
//! - [`Store::is_ready`] is asked by `/readyz` and by the readiness check of every `/v1` call.
//!
//! [`off_the_runtime_if`] lives here: the memory store runs large fills and imports with it, the API
//! large bodies.

mod memory;
pub mod redis;

use std::sync::Arc;

use chrono::TimeDelta;
use serde_json::{Map, Value};

use crate::pool::{Imported, Incoming, PoolConfig, PoolCounts, PoolError, Registry, StateFilter};
use crate::session::jar::JarOp;
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, Session, StatusReport, Timestamp};

/// Where the pools live.
#[derive(Debug)]
pub enum Store {
    /// In this process: the registry of pools, each behind its own lock (persisted by
    /// [`crate::persist`], which works on the registry directly).
    Memory(Arc<Registry>),
    /// In Redis (or Valkey), shared by every server on it: see [`redis`].
    Redis(Box<redis::RedisStore>),
}

/// A new session's explicit parts, as a create request gives them (checked, not yet resolved over
/// the pool's settings).
#[derive(Debug, Default)]
pub struct CreateSession {
    /// Its id; `None` generates one.
    pub id: Option<String>,
    /// Settings over the pool's; empty takes the pool's as they are.
    pub settings: SettingsPatch,
    /// Free-form data.
    pub user_data: Map<String, Value>,
    /// Initial cookies (already validated).
    pub cookies: Vec<Cookie>,
    /// `None`: the pool assigns one; `Some(None)`: no proxy; `Some(Some(url))`: that URL.
    pub proxy_url: Option<Option<String>>,
}

/// What a mark-like call does to the session, after the jar ops it brings.
#[derive(Debug, Clone)]
pub enum Mark<'a> {
    /// A good use (mark_good).
    Good,
    /// A bad use (mark_bad).
    Bad,
    /// Retirement (retire).
    Retire,
    /// A response status, read as `status_code` reads it.
    Status(StatusReport<'a>),
    /// Nothing but the jar ops (`POST .../cookies`).
    Nothing,
}

/// A pool as `/v1/pools` shows it, owned: pool calls are rare, and a store that keeps pools
/// elsewhere has them as values anyway.
#[derive(Debug, Clone)]
pub struct PoolInfo {
    /// The pool's name.
    pub name: String,
    /// Its configuration.
    pub config: PoolConfig,
    /// Its counts, as of the call.
    pub counts: PoolCounts,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Store {
    /// Hands out a usable session of `pool`, creating the pool when missing and filling it first
    /// (making room under `--max-sessions` when time has freed some), leased for `lease` when given;
    /// `render` writes the answer. Records the acquire latency.
    ///
    /// # Errors
    /// [`PoolError::NoSessionAvailable`] when every usable session is leased and the pool cannot
    /// grow; [`PoolError::LimitReached`] past `--max-pools` when the pool would be created.
    pub async fn acquire<R>(
        &self,
        pool: &str,
        lease: Option<TimeDelta>,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::acquire(registry, pool, lease, render).await,
            Self::Redis(redis) => redis.acquire(pool, lease, render).await,
        }
    }

    /// Creates a session in `pool` (creating the pool when missing), its settings resolved over the
    /// pool's; `render` writes the answer.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id already held; [`PoolError::Invalid`] for settings out
    /// of range; [`PoolError::LimitReached`] past `--max-pools` or `--max-sessions`.
    pub async fn create<R>(
        &self,
        pool: &str,
        new: CreateSession,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::create(registry, pool, new, render).await,
            Self::Redis(redis) => redis.create(pool, new, render).await,
        }
    }

    /// Reads the session `id`; `render` writes the answer.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`]; [`PoolError::SessionNotFound`].
    pub async fn get<R>(
        &self,
        pool: &str,
        id: &str,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::get(registry, pool, id, render).await,
            Self::Redis(redis) => redis.get(pool, id, render).await,
        }
    }

    /// Up to `limit` sessions of `pool` matching `filter`, in id order, after the id `after`;
    /// `render` gets the page and the cursor of the next one when there is one.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`].
    pub async fn list<R>(
        &self,
        pool: &str,
        filter: StateFilter,
        after: Option<&str>,
        limit: usize,
        render: impl FnOnce(&[&Session], Option<&str>, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::list(registry, pool, filter, after, limit, render).await,
            Self::Redis(redis) => redis.list(pool, filter, after, limit, render).await,
        }
    }

    /// Edits what does not affect usability (PATCH): merges `user_data` into the session's as a JSON
    /// merge patch, then applies `jar`; `render` writes the answer.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`]; [`PoolError::SessionNotFound`].
    pub async fn edit<R>(
        &self,
        pool: &str,
        id: &str,
        user_data: Option<Map<String, Value>>,
        jar: Vec<JarOp>,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::edit(registry, pool, id, user_data, jar, render).await,
            Self::Redis(redis) => redis.edit(pool, id, user_data, jar, render).await,
        }
    }

    /// Removes the session `id` now, whatever its state.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`]; [`PoolError::SessionNotFound`].
    pub async fn delete_session(&self, pool: &str, id: &str) -> Result<(), PoolError> {
        match self {
            Self::Memory(registry) => memory::delete_session(registry, pool, id).await,
            Self::Redis(redis) => redis.delete_session(pool, id).await,
        }
    }

    /// Applies `jar` to the session `id`, then `mark`, in one step (a retired session takes the jar
    /// ops too); with `lease_id` the session's live lease, the mark also ends it. A report without
    /// jar ops does not touch the jar; [`Mark::Nothing`] always does, as `POST .../cookies` always
    /// did. `render` gets the session and, for [`Mark::Status`], whether the status counted as
    /// blocked (`false` for the others).
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`]; [`PoolError::SessionNotFound`].
    pub async fn mark<R>(
        &self,
        pool: &str,
        id: &str,
        mark: Mark<'_>,
        lease_id: Option<&str>,
        jar: Vec<JarOp>,
        render: impl FnOnce(&Session, bool, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::mark(registry, pool, id, mark, lease_id, jar, render).await,
            Self::Redis(redis) => redis.mark(pool, id, mark, lease_id, jar, render).await,
        }
    }

    /// Ends the lease `lease_id` of the session `id` (a no-op on a retired session); `render` writes
    /// the answer.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`]; [`PoolError::SessionNotFound`]; [`PoolError::LeaseMismatch`]
    /// when `lease_id` is not the session's live lease.
    pub async fn release<R>(
        &self,
        pool: &str,
        id: &str,
        lease_id: &str,
        render: impl FnOnce(&Session, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::release(registry, pool, id, lease_id, render).await,
            Self::Redis(redis) => redis.release(pool, id, lease_id, render).await,
        }
    }

    /// Every pool, sorted by name: all as of one instant in memory; in Redis each page of 100 pools
    /// as of its own call.
    ///
    /// # Errors
    /// None from the memory store; a store elsewhere fails when it cannot be reached.
    pub async fn pools(&self) -> Result<Vec<PoolInfo>, PoolError> {
        match self {
            Self::Memory(registry) => Ok(memory::pools(registry).await),
            Self::Redis(redis) => redis.pools().await.map(|(pools, _)| pools),
        }
    }

    /// The pool `name`.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`].
    pub async fn pool(&self, name: &str) -> Result<PoolInfo, PoolError> {
        match self {
            Self::Memory(registry) => memory::pool(registry, name).await,
            Self::Redis(redis) => redis.pool(name).await,
        }
    }

    /// Creates the pool `name` with `config`, or reconfigures it (its sessions keep their
    /// settings); returns it and whether it was created.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`.
    pub async fn put_pool(&self, name: &str, config: PoolConfig) -> Result<(PoolInfo, bool), PoolError> {
        match self {
            Self::Memory(registry) => memory::put_pool(registry, name, config).await,
            Self::Redis(redis) => redis.put_pool(name, config).await,
        }
    }

    /// Deletes the pool and its sessions; `default` is emptied and reset to the defaults instead.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`].
    pub async fn delete_pool(&self, name: &str) -> Result<(), PoolError> {
        match self {
            Self::Memory(registry) => memory::delete_pool(registry, name).await,
            Self::Redis(redis) => redis.delete_pool(name).await,
        }
    }

    /// The pool's configuration and every session it holds, in id order, with the clock applied;
    /// `render` writes them out as it goes.
    ///
    /// # Errors
    /// [`PoolError::PoolNotFound`].
    pub async fn export<R>(
        &self,
        pool: &str,
        render: impl FnOnce(&PoolConfig, &mut dyn Iterator<Item = &Session>, Timestamp) -> R,
    ) -> Result<R, PoolError> {
        match self {
            Self::Memory(registry) => memory::export(registry, pool, render).await,
            Self::Redis(redis) => redis.export(pool, render).await,
        }
    }

    /// Puts in every session whose id `pool` does not hold yet, all or nothing, creating the pool
    /// with `config` when missing (an existing pool keeps its own); returns what was imported and
    /// whether the pool was created.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id given twice; [`PoolError::LimitReached`] past
    /// `--max-pools`, or when the sessions would not all fit under `--max-sessions`;
    /// [`PoolError::Invalid`] for settings out of range.
    pub async fn import<T: Incoming + Clone + Send>(
        &self,
        pool: &str,
        config: PoolConfig,
        sessions: Vec<T>,
    ) -> Result<(Imported<T>, bool), PoolError> {
        match self {
            Self::Memory(registry) => memory::import(registry, pool, config, sessions).await,
            Self::Redis(redis) => redis.import(pool, config, sessions).await,
        }
    }

    /// The server's default pool configuration (for new pools and for settings left out).
    pub fn defaults(&self) -> &PoolConfig {
        match self {
            Self::Memory(registry) => registry.defaults(),
            Self::Redis(redis) => redis.defaults(),
        }
    }

    /// The counts of every pool, by name, and the sessions held by all of them, for `/metrics`.
    ///
    /// # Errors
    /// None from the memory store; a store elsewhere fails when it cannot be reached.
    pub async fn gauges(&self) -> Result<(Vec<(String, PoolCounts)>, usize), PoolError> {
        match self {
            Self::Memory(registry) => Ok(memory::gauges(registry).await),
            Self::Redis(redis) => redis.gauges().await,
        }
    }

    /// Applies the clock to every pool, so leases end, sessions expire and retired ones are purged
    /// even in pools nobody calls (the background sweep).
    pub async fn tick(&self) {
        match self {
            Self::Memory(registry) => registry.tick_all(crate::clock::now()).await,
            Self::Redis(redis) => redis.tick().await,
        }
    }

    /// Resolves once a call has found the store out of reach (it is then not ready); never for
    /// the memory store.
    pub async fn lost(&self) {
        match self {
            Self::Memory(_) => std::future::pending().await,
            Self::Redis(redis) => redis.lost().await,
        }
    }

    /// Whether the store can serve: the memory store always can.
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(redis) => redis.is_ready(),
        }
    }
}

/// Runs `work` so that, when `large`, it does not hold up the other requests queued on this runtime
/// worker: `block_in_place` hands them to another worker first. Work on one large pool (a fill of a
/// million sessions, an import of a large document) so takes one thread, and every other request,
/// `/healthz` and other pools included, goes on being served. Small work runs inline: handing off a
/// worker costs more than it saves. On a single-threaded runtime (some tests) it always runs inline.
pub fn off_the_runtime_if<R>(large: bool, work: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if large && multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
