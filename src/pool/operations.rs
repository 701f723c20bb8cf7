//! One named pool: its operations, each of which first applies the clock and then costs O(1) or
//! O(log n) in the pool's size.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use chrono::TimeDelta;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use uuid::Uuid;

use super::changes::Changes;
use super::metrics::PoolMetrics;
use super::slots::{Slot, State};
use super::timers::Queue;
use super::{PoolConfig, PoolError, SessionBudget};
use crate::session::{
    self, Cookie, Lease, RetiredReason, Session, SessionId, SessionSettings, StatusReport, StatusVerdict, Timestamp,
};

/// Which sessions a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFilter {
    /// Usable, leased or not.
    Usable,
    /// Retired and not yet purged.
    Retired,
    /// Usable under a live lease.
    Leased,
    /// Everything held.
    #[default]
    All,
}

/// The counts of a pool, maintained rather than recounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    /// All sessions held, retired ones not yet purged included.
    pub sessions: usize,
    /// Usable sessions, leased or not.
    pub usable: usize,
    /// `sessions - usable`.
    pub retired: usize,
    /// Usable sessions under a live lease.
    pub leased: usize,
}

/// A new session's explicit parts, for [`Pool::create`].
#[derive(Debug, Default)]
pub struct NewSession {
    /// Its id; `None` generates one.
    pub id: Option<String>,
    /// Its settings; `None` takes the pool's.
    pub settings: Option<SessionSettings>,
    /// Free-form data.
    pub user_data: serde_json::Map<String, serde_json::Value>,
    /// Initial cookies (already validated).
    pub cookies: Vec<Cookie>,
    /// `None`: the pool assigns one; `Some(None)`: no proxy; `Some(Some(url))`: that URL.
    pub proxy_url: Option<Option<String>>,
}

/// Identifies one incarnation of a pool in the state file. A pool deleted and made again, or
/// `default` reset, gets a new key, so what was stored under the old key can be dropped as a whole,
/// in the background, instead of session by session in the call that deleted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey(pub i64);

impl PoolKey {
    fn fresh() -> Self {
        Self(rand::random::<i64>() & i64::MAX)
    }
}

/// One named pool of sessions. Not thread-safe by itself: the registry keeps each behind its own
/// Tokio mutex, so every call on a pool is atomic and pools never contend.
#[derive(Debug)]
pub struct Pool {
    name: Arc<str>,
    pub(super) key: PoolKey,
    config: PoolConfig,
    pub(super) created_at: Timestamp,
    pub(super) retention: TimeDelta,
    pub(super) budget: Arc<SessionBudget>,
    /// The slab (see the `slots` module).
    pub(super) slots: Vec<Slot>,
    /// Slots without a session, reused first.
    pub(super) vacant: Vec<u32>,
    pub(super) by_id: HashMap<SessionId, u32>,
    /// Every id held, for listing in id order.
    pub(super) ordered: BTreeSet<SessionId>,
    /// Slots of the free sessions.
    pub(super) free: Vec<u32>,
    pub(super) usable: usize,
    pub(super) leased: usize,
    pub(super) expiries: Queue,
    pub(super) lease_ends: Queue,
    pub(super) purges: Queue,
    proxy_cursor: usize,
    pub(super) rng: SmallRng,
    pub(super) metrics: PoolMetrics,
    pub(super) changes: Changes,
    pub(super) deleted: bool,
}

impl Pool {
    /// An empty pool. `retention` is how long retired sessions stay readable; `budget` is shared by
    /// every pool of the registry.
    pub fn new(
        name: &str,
        config: PoolConfig,
        retention: TimeDelta,
        budget: Arc<SessionBudget>,
        now: Timestamp,
    ) -> Self {
        Self {
            name: Arc::from(name),
            key: PoolKey::fresh(),
            metrics: PoolMetrics::new(name),
            config,
            created_at: now,
            retention,
            budget,
            slots: Vec::new(),
            vacant: Vec::new(),
            by_id: HashMap::new(),
            ordered: BTreeSet::new(),
            free: Vec::new(),
            usable: 0,
            leased: 0,
            expiries: Queue::default(),
            lease_ends: Queue::default(),
            purges: Queue::default(),
            proxy_cursor: 0,
            rng: SmallRng::from_os_rng(),
            changes: Changes::new(),
            deleted: false,
        }
    }

    /// Replaces the random source, so tests can make picks repeatable.
    pub fn seed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This incarnation of the pool: see [`PoolKey`].
    pub fn key(&self) -> PoolKey {
        self.key
    }

    /// Whether the pool was deleted (a handle to it may outlive its place in the registry).
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// The pool's configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// When the pool was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// New settings for sessions created from now on; existing sessions keep theirs and nothing is
    /// destroyed, even when `max_pool_size` goes down.
    pub fn reconfigure(&mut self, config: PoolConfig) {
        self.config = config;
        self.proxy_cursor = 0;
        self.changes.config = true;
    }

    /// Puts a session with all its state, as restored from disk, whatever `--max-sessions` says (a
    /// restore never drops stored state). A lease already past is dropped; a retired session waits
    /// for its purge like any other.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id already held.
    pub fn adopt(&mut self, session: Session, now: Timestamp) -> Result<(), PoolError> {
        self.tick(now);
        if self.by_id.contains_key(&*session.id) {
            return Err(PoolError::SessionExists(session.id.to_string()));
        }
        self.budget.force_reserve(1);
        self.place(session, now);
        Ok(())
    }

    /// Puts a session whose id is new to the pool and whose place under `--max-sessions` is
    /// reserved (see [`Pool::adopt`], [`Pool::import`]).
    pub(super) fn place(&mut self, mut session: Session, now: Timestamp) {
        debug_assert!(!self.by_id.contains_key(&*session.id), "{} placed twice", session.id);
        if session.lease.is_some_and(|l| l.until <= now) {
            session.lease = None;
        }
        self.insert(session, false, now);
    }

    /// The counts at `now`.
    pub fn counts(&mut self, now: Timestamp) -> PoolCounts {
        self.tick(now);
        let sessions = self.by_id.len();
        PoolCounts { sessions, usable: self.usable, retired: sessions - self.usable, leased: self.leased }
    }

    /// How many places under `--max-sessions` an acquire at `now` needs so as not to answer
    /// `no_session_available`: 1 when no session is free and the pool may still grow, else 0. (With
    /// a free session to hand out, filling stops where the places end until the sweep gives back
    /// what other pools purged; making room for every fill would walk all pools on most acquires of
    /// a server at its limit.)
    pub fn shortfall(&mut self, now: Timestamp) -> usize {
        self.tick(now);
        usize::from(self.free.is_empty() && self.usable < self.config.max_pool_size as usize)
    }

    /// How many sessions the next acquire creates to fill the pool (as of the last tick).
    pub fn fill_size(&self) -> usize {
        (self.config.max_pool_size as usize).saturating_sub(self.usable)
    }

    /// Hands out a usable session: fills the pool up to `max_pool_size` usable sessions, then picks
    /// one uniformly among those not leased. With `lease`, the session is leased for that long.
    ///
    /// # Errors
    /// [`PoolError::NoSessionAvailable`] when every usable session is leased and the pool cannot
    /// grow (it is full, or `--max-sessions` is reached).
    pub fn acquire(&mut self, lease: Option<TimeDelta>, now: Timestamp) -> Result<&Session, PoolError> {
        self.tick(now);
        let missing = self.fill_size();
        if missing > 0 {
            let granted = self.budget.try_reserve(missing);
            for _ in 0..granted {
                let session = self.new_session(self.generate_id(), Arc::clone(&self.config.session), now);
                self.insert(session, true, now);
            }
        }
        let Some(slot) = self.pick() else {
            self.metrics.exhausted.increment(1);
            return Err(PoolError::NoSessionAvailable);
        };
        if let Some(duration) = lease {
            let lease = Lease { id: Uuid::new_v4(), until: session::saturating_add(now, duration) };
            self.transition(slot, now, |s| s.lease = Some(lease));
        }
        self.metrics.acquired.increment(1);
        Ok(self.session_at(slot))
    }

    /// Records how long an acquire took, lock wait included (the caller measures it).
    pub fn record_acquire_latency(&self, elapsed: std::time::Duration) {
        self.metrics.acquire_seconds.record(elapsed.as_secs_f64());
    }

    /// Creates a session with the given parts; settings not given come from the pool.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id already held; [`PoolError::Invalid`] for settings out of
    /// range; [`PoolError::LimitReached`] past `--max-sessions`.
    pub fn create(&mut self, new: NewSession, now: Timestamp) -> Result<&Session, PoolError> {
        self.tick(now);
        let settings = match new.settings {
            Some(settings) => {
                settings.validate()?;
                Arc::new(settings)
            }
            None => Arc::clone(&self.config.session),
        };
        let id = match new.id {
            Some(id) if self.by_id.contains_key(id.as_str()) => return Err(PoolError::SessionExists(id)),
            Some(id) => SessionId::from(id),
            None => self.generate_id(),
        };
        if self.budget.try_reserve(1) == 0 {
            return Err(PoolError::no_session_left(self.budget.max()));
        }
        let mut session = match new.proxy_url {
            Some(explicit) => {
                let mut session = Session::new(id, settings, now);
                session.proxy_url = explicit.map(String::into_boxed_str);
                session
            }
            None => self.new_session(id, settings, now),
        };
        session.user_data = new.user_data;
        session.cookies = new.cookies;
        let slot = self.insert(session, true, now);
        Ok(self.session_at(slot))
    }

    /// The session with that id, as of `now`.
    pub fn get(&mut self, id: &str, now: Timestamp) -> Option<&Session> {
        self.tick(now);
        let slot = self.lookup(id)?;
        Some(self.session_at(slot))
    }

    /// Changes what does not affect usability: user data and cookies.
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn edit(
        &mut self,
        id: &str,
        now: Timestamp,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>, &mut Vec<Cookie>),
    ) -> Result<&Session, PoolError> {
        let slot = self.find(id, now)?;
        if let Some(tenant) = self.slots[slot as usize].tenant.as_mut() {
            edit(&mut tenant.session.user_data, &mut tenant.session.cookies);
        }
        self.mark_dirty(slot);
        Ok(self.session_at(slot))
    }

    /// Removes a session now, whatever its state.
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn delete(&mut self, id: &str, now: Timestamp) -> Result<(), PoolError> {
        let slot = self.find(id, now)?;
        self.remove_slot(slot);
        Ok(())
    }

    /// A good use (docs/semantics.md); a matching `lease_id` also ends the lease.
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn mark_good(&mut self, id: &str, lease_id: Option<&str>, now: Timestamp) -> Result<&Session, PoolError> {
        let (slot, used) = self.apply(id, lease_id, now, |s| {
            s.mark_good(now);
        })?;
        if used {
            self.metrics.good.increment(1);
        }
        Ok(self.session_at(slot))
    }

    /// A bad use (docs/semantics.md); a matching `lease_id` also ends the lease.
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn mark_bad(&mut self, id: &str, lease_id: Option<&str>, now: Timestamp) -> Result<&Session, PoolError> {
        let (slot, used) = self.apply(id, lease_id, now, |s| {
            s.mark_bad(now);
        })?;
        if used {
            self.metrics.bad.increment(1);
        }
        Ok(self.session_at(slot))
    }

    /// Retires the session (reason `retired`).
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn retire(&mut self, id: &str, lease_id: Option<&str>, now: Timestamp) -> Result<&Session, PoolError> {
        let (slot, _) = self.apply(id, lease_id, now, |s| {
            s.retire(RetiredReason::Retired, now);
        })?;
        Ok(self.session_at(slot))
    }

    /// What a crawler does with each response's status (docs/semantics.md, `status_code`).
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`].
    pub fn report_status(
        &mut self,
        id: &str,
        report: &StatusReport<'_>,
        lease_id: Option<&str>,
        now: Timestamp,
    ) -> Result<(StatusVerdict, &Session), PoolError> {
        let mut verdict = StatusVerdict { blocked: false };
        let (slot, used) = self.apply(id, lease_id, now, |s| verdict = s.report_status(report, now).0)?;
        if used && (200..=399).contains(&report.status_code) {
            self.metrics.good.increment(1);
        } else if used {
            self.metrics.bad.increment(1);
        }
        Ok((verdict, self.session_at(slot)))
    }

    /// Ends the lease `lease_id`. On a retired session it is a no-op, never an error.
    ///
    /// # Errors
    /// [`PoolError::SessionNotFound`]; [`PoolError::LeaseMismatch`] when `lease_id` is not the
    /// session's current lease.
    pub fn release(&mut self, id: &str, lease_id: &str, now: Timestamp) -> Result<&Session, PoolError> {
        let slot = self.find(id, now)?;
        let session = self.session_at(slot);
        if session.retirement.is_none() {
            let current = session.lease.map(|l| l.id);
            if current.is_none() || current != parse_lease_id(lease_id) {
                return Err(PoolError::LeaseMismatch(lease_id.to_owned()));
            }
            self.transition(slot, now, |s| s.lease = None);
        }
        Ok(self.session_at(slot))
    }

    /// Up to `limit` sessions in `state`, in id order, after the id `after`; with the cursor for the
    /// next page when there is one.
    pub fn list(
        &mut self,
        state: StateFilter,
        after: Option<&str>,
        limit: usize,
        now: Timestamp,
    ) -> (Vec<&Session>, Option<SessionId>) {
        self.tick(now);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = self
            .ordered
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|id| self.by_id.get(id).and_then(|slot| self.slots[*slot as usize].tenant.as_ref()))
            .filter(|tenant| match state {
                StateFilter::All => true,
                StateFilter::Usable => matches!(tenant.state, State::Free | State::Leased),
                StateFilter::Retired => tenant.state == State::Retired,
                StateFilter::Leased => tenant.state == State::Leased,
            })
            .map(|tenant| &tenant.session);
        let page: Vec<&Session> = matching.by_ref().take(limit).collect();
        let next = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.id.clone()),
            _ => None,
        };
        (page, next)
    }

    /// Every session held, in id order, as of the last call (call [`Pool::tick`] first for `now`).
    pub fn sessions(&self) -> impl Iterator<Item = &Session> + '_ {
        self.ordered.iter().filter_map(|id| self.by_id.get(id)).filter_map(|slot| self.slots[*slot as usize].session())
    }

    /// Whether a session with this id is held.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Number of sessions held, retired ones included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the pool holds no session.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Drops every session and gives their budget back; the pool stays configured.
    pub fn clear(&mut self) {
        self.budget.release(self.by_id.len());
        let fresh =
            Pool::new(&self.name, self.config.clone(), self.retention, Arc::clone(&self.budget), self.created_at);
        let deleted = self.deleted;
        *self = fresh;
        self.deleted = deleted;
    }

    /// Runs a mark-like operation and, when `lease_id` is the live lease, ends that lease. Returns
    /// the slot and whether the operation counted a use.
    fn apply(
        &mut self,
        id: &str,
        lease_id: Option<&str>,
        now: Timestamp,
        op: impl FnOnce(&mut Session),
    ) -> Result<(u32, bool), PoolError> {
        let slot = self.find(id, now)?;
        let lease_id = lease_id.and_then(parse_lease_id);
        let uses_before = self.session_at(slot).usage_count;
        self.transition(slot, now, |s| {
            op(s);
            if s.lease.is_some_and(|lease| Some(lease.id) == lease_id) {
                s.lease = None;
            }
        });
        Ok((slot, self.session_at(slot).usage_count != uses_before))
    }

    fn generate_id(&self) -> SessionId {
        loop {
            let mut buffer = [0; uuid::fmt::Simple::LENGTH];
            let id = Uuid::new_v4().simple().encode_lower(&mut buffer);
            if !self.by_id.contains_key(&*id) {
                return SessionId::from(&*id);
            }
        }
    }

    /// A fresh session with the pool's next sticky proxy.
    fn new_session(&mut self, id: SessionId, settings: Arc<SessionSettings>, now: Timestamp) -> Session {
        let mut session = Session::new(id, settings, now);
        session.proxy_url = self.config.proxy_for(&session.id, &mut self.proxy_cursor);
        session
    }
}

fn parse_lease_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}
