//! Pools of sessions and the registry of named pools: the data structures that make every call cost
//! O(1) or O(log n) in the pool's size.
//!
//! # How a pool keeps acquire cheap
//! Sessions live in a slab (`slots`), found by id through a hash map; a sorted set of ids serves
//! listing in id order. Every slot is in exactly one of three states, kept in step by one function,
//! `Pool::transition`:
//! - *free*: usable and not leased; its index is in the `free` vector, so a uniform pick is one
//!   random index, and removal is a swap-remove (while four in five slots are free, a pick draws
//!   a slot directly and redraws a non-free one, see `Pool::pick`);
//! - *leased*: usable under a live lease;
//! - *retired*: terminal; it waits in the purge queue for the retention to pass.
//!
//! What the clock changes without a call (expiry, lease ends, purges) sits in three min-heaps keyed by
//! time. Every operation first runs [`Pool::tick`], which pops what is due, so a read never shows a
//! state the clock has already left behind, and no call scans the pool. Heap entries carry the slot's
//! generation, so a purged and reused slot never acts on an old entry.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use chrono::TimeDelta;
use metrics::{Counter, Histogram};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

mod ahead;
mod recent;

use ahead::{prefetch, Picks, NTA, T0};
use recent::Recent;

use crate::session::{
    self, Cookie, Lease, RetiredReason, Retirement, Session, SessionId, SessionSettings, StatusReport, StatusVerdict,
    Timestamp,
};

/// The largest `max_pool_size` a pool may have.
pub const MAX_POOL_SIZE_LIMIT: u32 = 1_000_000;
/// Crawlee's default pool size.
pub const DEFAULT_MAX_POOL_SIZE: u32 = 1000;
/// The pool that always exists.
pub const DEFAULT_POOL: &str = "default";

/// What a pool is configured with; sessions it creates take their settings from here.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// How many usable sessions acquire fills the pool to; 0 makes a consume-only pool.
    pub max_pool_size: u32,
    /// Settings of the sessions the pool creates.
    pub session: Arc<SessionSettings>,
    /// Proxy URLs handed to new sessions round-robin.
    pub proxy_urls: Vec<String>,
    /// A proxy URL with `{session_id}` in it; wins over `proxy_urls`.
    pub proxy_url_template: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_pool_size: DEFAULT_MAX_POOL_SIZE,
            session: Arc::new(SessionSettings::default()),
            proxy_urls: Vec::new(),
            proxy_url_template: None,
        }
    }
}

/// The placeholder a proxy URL template substitutes with the session id.
pub const SESSION_ID_PLACEHOLDER: &str = "{session_id}";

impl PoolConfig {
    /// Checks the pool size, the session settings and every proxy URL.
    ///
    /// # Errors
    /// [`session::Error::InvalidSetting`] naming the field.
    pub fn validate(&self) -> Result<(), session::Error> {
        if self.max_pool_size > MAX_POOL_SIZE_LIMIT {
            return Err(session::Error::InvalidSetting {
                field: "max_pool_size",
                reason: format!("must be in 0..={MAX_POOL_SIZE_LIMIT}"),
            });
        }
        self.session.validate()?;
        for url in &self.proxy_urls {
            validate_proxy_url(url).map_err(|reason| session::Error::InvalidSetting { field: "proxy_urls", reason })?;
        }
        if let Some(template) = &self.proxy_url_template {
            if !template.contains(SESSION_ID_PLACEHOLDER) {
                return Err(session::Error::InvalidSetting {
                    field: "proxy_url_template",
                    reason: format!("must contain {SESSION_ID_PLACEHOLDER}"),
                });
            }
            let sample = template.replace(SESSION_ID_PLACEHOLDER, "0123456789abcdef0123456789abcdef");
            validate_proxy_url(&sample)
                .map_err(|reason| session::Error::InvalidSetting { field: "proxy_url_template", reason })?;
        }
        Ok(())
    }
}

/// Accepts absolute http, https, socks5 and socks5h URLs with a host. The error never repeats the
/// URL, which may carry credentials.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn validate_proxy_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
        return Err(format!("scheme {:?} is not one of http, https, socks5, socks5h", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// Errors of pool operations; the API layer maps each to its problem code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PoolError {
    /// No pool of that name.
    #[error("pool {0:?} does not exist")]
    PoolNotFound(String),
    /// No session of that id in the pool.
    #[error("session {0:?} does not exist")]
    SessionNotFound(String),
    /// Create with an id the pool already holds.
    #[error("session {0:?} already exists")]
    SessionExists(String),
    /// Release with a lease id that is not the session's current lease.
    #[error("lease {0:?} is not the session's current lease")]
    LeaseMismatch(String),
    /// Every usable session is leased and the pool cannot grow.
    #[error("no session is available")]
    NoSessionAvailable,
    /// `--max-pools` or `--max-sessions` reached.
    #[error("{0}")]
    LimitReached(String),
    /// Input the domain rejects.
    #[error(transparent)]
    Invalid(#[from] session::Error),
}

/// The count of sessions held by all pools together, against `--max-sessions`.
///
/// A pool purges its retired sessions when its clock is applied: on its next call, or on the
/// background sweep. Until then they still count here, so a pool short of places would be refused
/// for sessions another pool has already let go. The budget therefore also keeps the earliest time
/// at which any pool may give places back (`ReleaseTime`): a call that finds too few places left
/// and that time passed has the registry apply the clock to every pool first
/// ([`Registry::make_room`]).
#[derive(Debug)]
pub struct SessionBudget {
    held: AtomicUsize,
    max: usize,
    release: ReleaseTime,
}

impl SessionBudget {
    /// A budget of `max` sessions.
    pub fn new(max: usize) -> Self {
        Self { held: AtomicUsize::new(0), max, release: ReleaseTime::default() }
    }

    /// Reserves up to `wanted` sessions; returns how many it got.
    pub fn try_reserve(&self, wanted: usize) -> usize {
        let mut granted = 0;
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            granted = wanted.min(self.max.saturating_sub(held));
            (granted > 0).then_some(held + granted)
        });
        granted
    }

    /// Takes `n` sessions whatever the limit (restoring stored state never drops it).
    pub fn force_reserve(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` sessions back.
    pub fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Sessions held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Places left under the limit.
    pub fn left(&self) -> usize {
        self.max.saturating_sub(self.held())
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The earliest time at which some pool may purge a session (and so give a place back): never
/// late, and early only until the next walk. Every pool notes each purge time and each expiry plus
/// the retention when it queues them; a walk over every pool ([`Registry::tick_all`]) then puts in
/// place the earliest release it found, since the ones due before are done.
///
/// Putting a walk's finding in place is what could make the time late: a pool the walk has already
/// visited may queue a purge before the walk ends. So while a walk runs, notes also go to
/// `pending` (reset when it starts), and the walk's finding is lowered to it. Both change under one
/// lock; outside a walk, a note no earlier than the time in place changes nothing and takes no lock,
/// which is the common case (sessions retire after the earliest one known).
#[derive(Debug)]
struct ReleaseTime {
    /// Unix microseconds (rounded down: early by less than one, never late); `i64::MAX` when none
    /// is known. Written only under `times`.
    at: AtomicI64,
    walking: AtomicBool,
    times: std::sync::Mutex<Times>,
}

/// The state behind [`ReleaseTime`]'s lock.
#[derive(Debug)]
struct Times {
    at: i64,
    /// The earliest note since the running walk began.
    pending: i64,
}

impl Default for ReleaseTime {
    fn default() -> Self {
        Self {
            at: AtomicI64::new(i64::MAX),
            walking: AtomicBool::new(false),
            times: std::sync::Mutex::new(Times { at: i64::MAX, pending: i64::MAX }),
        }
    }
}

impl ReleaseTime {
    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a pool may purge a session at `at`. Called with that pool locked, so a walk that
    /// visits the pool later sees the purge queued, and one that visited it before is still running.
    fn note(&self, at: Timestamp) {
        let micros = at.timestamp_micros();
        if self.walking.load(Ordering::SeqCst) || micros < self.at.load(Ordering::SeqCst) {
            let mut times = self.times();
            times.at = times.at.min(micros);
            times.pending = times.pending.min(micros);
            self.at.store(times.at, Ordering::SeqCst);
        }
    }

    /// Whether some pool may have sessions to purge at `now`.
    fn due(&self, now: Timestamp) -> bool {
        self.at.load(Ordering::SeqCst) <= now.timestamp_micros()
    }

    /// Starts a walk (one at a time: the caller holds [`Registry`]'s `walking`).
    fn begin_walk(&self) {
        self.times().pending = i64::MAX;
        self.walking.store(true, Ordering::SeqCst);
    }

    /// Ends a walk that found `earliest` as the next release of every pool it visited.
    fn end_walk(&self, earliest: Option<Timestamp>) {
        let earliest = earliest.map_or(i64::MAX, |at| at.timestamp_micros());
        let mut times = self.times();
        times.at = earliest.min(times.pending);
        self.at.store(times.at, Ordering::SeqCst);
        self.walking.store(false, Ordering::SeqCst);
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// No session, or one being filed.
    Vacant,
    Free,
    Leased,
    Retired,
}

impl SlotState {
    fn of(session: &Session) -> Self {
        if session.retirement.is_some() {
            Self::Retired
        } else if session.lease.is_some() {
            Self::Leased
        } else {
            Self::Free
        }
    }
}

/// One session's place in the pool.
///
/// `repr(C)` and 128-byte aligned: the flags here and the head of [`Session`] (see its layout) are
/// everything an acquire and a mark read or write, and they fill one aligned pair of cache lines.
/// In a pool far larger than the caches, that pair is what each pick costs in DRAM traffic.
#[derive(Debug)]
#[repr(C, align(128))]
struct Slot {
    generation: u32,
    state: SlotState,
    /// Changed since the last [`Pool::take_changes`].
    dirty: bool,
    /// Whether `session` is a real session; a vacant slot holds a placeholder (not an `Option`,
    /// whose niche would be a field in the cold tail of the session).
    occupied: bool,
    session: Session,
    /// Index in `Pool::free` while `state == Free`; only a change of state reads it.
    free_pos: u32,
}

/// The bytes of a [`Slot`] a pick reads: its flags and the session's hot fields.
const HOT_BYTES: usize = 128;

/// Asks for the lines of `slot` a pick reads. Non-temporal: they are used within a few picks and then
/// not for a long time, so they should not push the rest out of the caches. In a pool of 1M, one
/// binary reading the hint at run time, in four copies, gave the core bench's cycle 0.5-1.8 ns less
/// with this hint than with T0 in every copy.
fn prefetch_hot(slot: &Slot) {
    let start = std::ptr::from_ref(slot).cast::<u8>();
    for offset in (0..HOT_BYTES).step_by(64) {
        prefetch::<NTA, _>(start.wrapping_add(offset));
    }
}

/// Draws over the slots before [`Pool::pick`] falls back to the free vector.
const SLOT_DRAWS: usize = 4;

/// What changed since the last [`Pool::take_changes`]: the bookkeeping that lets a persist cycle
/// cost O(changes), not O(sessions).
#[derive(Debug, Default)]
struct Changes {
    /// Slots marked dirty, in the order they were; a slot taken by id order stays listed until the
    /// list is compacted, so `dirty_count` is the true count.
    dirty: Vec<u32>,
    dirty_count: usize,
    removed: Vec<SessionId>,
    config: bool,
}

/// The changes of one pool since the previous call, borrowed from the locked pool.
#[derive(Debug)]
pub struct ChangeSet<'a> {
    /// The configuration changed (or the pool is new).
    pub config_changed: bool,
    /// Ids removed (deleted or purged); apply before `upserted`.
    pub removed: Vec<SessionId>,
    /// Sessions created or changed.
    pub upserted: Vec<&'a Session>,
    /// Changes left for a later call (the call was given a limit).
    pub more: bool,
}

impl ChangeSet<'_> {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.config_changed && self.removed.is_empty() && self.upserted.is_empty()
    }
}

/// A time-keyed entry of one of the pool's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Timestamp,
    slot: u32,
    generation: u32,
}

/// A min-heap of [`Due`] entries. Entries that went stale (a lease released early, a session deleted
/// before its expiry) are not searched for: they are skipped when popped, and dropped all at once
/// when the heap has doubled since it was last compacted. A queue so holds at most about twice the
/// live entries it had at its last compaction (stale ones also leave when their time comes), and
/// every operation stays amortized O(log n).
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Due>>,
    /// The length above which the next push compacts.
    compact_above: usize,
}

/// Below this many entries a queue is never compacted (a few in tests, so the property test
/// compacts often and checks that no live entry is ever dropped).
const QUEUE_COMPACT_MIN: usize = if cfg!(test) { 8 } else { 1024 };

impl Queue {
    fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// When the earliest entry is due.
    fn next_at(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse(due)| due.at)
    }

    /// The earliest entry if it is due at `now`.
    fn pop_due(&mut self, now: Timestamp) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse(due)) if due.at <= now => self.heap.pop().map(|Reverse(due)| due),
            _ => None,
        }
    }

    fn bloated(&self) -> bool {
        self.heap.len() > self.compact_above.max(QUEUE_COMPACT_MIN)
    }

    /// Keeps the entries `live` accepts.
    fn compact(&mut self, mut live: impl FnMut(&Due) -> bool) {
        self.heap.retain(|Reverse(due)| live(due));
        self.compact_above = 2 * self.heap.len();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Metric handles registered once per pool, so a hot call does no label lookup.
#[derive(Debug)]
struct PoolMetrics {
    acquired: Counter,
    exhausted: Counter,
    good: Counter,
    bad: Counter,
    created: Counter,
    retired: [Counter; 5],
    acquire_seconds: Histogram,
}

impl PoolMetrics {
    fn new(pool: &str) -> Self {
        let pool = pool.to_owned();
        let acquires = |result: &'static str| metrics::counter!("session_pool_acquires_total", "pool" => pool.clone(), "result" => result);
        let marks = |outcome: &'static str| metrics::counter!("session_pool_marks_total", "pool" => pool.clone(), "outcome" => outcome);
        Self {
            acquired: acquires("ok"),
            exhausted: acquires("exhausted"),
            good: marks("good"),
            bad: marks("bad"),
            created: metrics::counter!("session_pool_sessions_created_total", "pool" => pool.clone()),
            acquire_seconds: metrics::histogram!("session_pool_acquire_duration_seconds", "pool" => pool.clone()),
            retired: RetiredReason::ALL.map(|reason| {
                metrics::counter!("session_pool_retirements_total", "pool" => pool.clone(), "reason" => reason.as_str())
            }),
        }
    }

    fn retirement(&self, reason: RetiredReason) -> &Counter {
        let index = RetiredReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.retired[index]
    }
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
    key: PoolKey,
    config: PoolConfig,
    created_at: Timestamp,
    retention: TimeDelta,
    budget: Arc<SessionBudget>,
    slots: Vec<Slot>,
    vacant: Vec<u32>,
    by_id: HashMap<SessionId, u32>,
    ordered: BTreeSet<SessionId>,
    free: Vec<u32>,
    usable: usize,
    leased: usize,
    expiries: Queue,
    lease_ends: Queue,
    purges: Queue,
    proxy_cursor: usize,
    picks: Picks,
    /// Whether the last acquire took a lease: the next ones probably will too, and a lease takes
    /// the session out of the free vector, so their prefetches include what that touches.
    leasing: bool,
    recent: Recent,
    metrics: PoolMetrics,
    changes: Changes,
    deleted: bool,
}

const NOT_FREE: u32 = u32::MAX;

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
            picks: Picks::new(SmallRng::from_os_rng()),
            leasing: false,
            recent: Recent::new(),
            changes: Changes { config: true, ..Changes::default() },
            deleted: false,
        }
    }

    /// Replaces the random source, so tests can make picks repeatable.
    pub fn seed(&mut self, seed: u64) {
        self.picks = Picks::new(SmallRng::seed_from_u64(seed));
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

    /// Puts a session with all its state, as restored from disk or imported. A lease already past
    /// is dropped; a retired session waits for its purge like any other.
    ///
    /// # Errors
    /// [`PoolError::SessionExists`] for an id already held; [`PoolError::LimitReached`] past
    /// `--max-sessions` when `within_budget` (a restore passes false: it never drops stored state).
    pub fn adopt(&mut self, mut session: Session, within_budget: bool, now: Timestamp) -> Result<(), PoolError> {
        self.tick(now);
        if self.by_id.contains_key(&*session.id) {
            return Err(PoolError::SessionExists(session.id.to_string()));
        }
        if !within_budget {
            self.budget.force_reserve(1);
        } else if self.budget.try_reserve(1) == 0 {
            return Err(PoolError::LimitReached(format!(
                "the server holds its maximum of {} sessions (--max-sessions)",
                self.budget.max()
            )));
        }
        if session.lease.is_some_and(|l| l.until <= now) {
            session.lease = None;
        }
        self.insert(session, false, now);
        Ok(())
    }

    /// Makes the next [`Pool::take_changes`] report the configuration as changed.
    pub fn mark_config_changed(&mut self) {
        self.changes.config = true;
    }

    /// Sessions changed or removed since the previous [`Pool::take_changes`].
    pub fn pending_changes(&self) -> usize {
        self.changes.dirty_count + self.changes.removed.len()
    }

    /// The config flag and the removals of a take of at most `limit` sessions (see
    /// [`Pool::take_changes`]); `None` while removals are left, when no upsert may be taken yet.
    fn take_removals(&mut self, limit: usize) -> (bool, Vec<SessionId>, Option<usize>) {
        let config_changed = std::mem::take(&mut self.changes.config);
        let removed: Vec<SessionId> = if self.changes.removed.len() <= limit {
            std::mem::take(&mut self.changes.removed)
        } else {
            self.changes.removed.drain(..limit).collect()
        };
        let room = self.changes.removed.is_empty().then(|| limit - removed.len());
        (config_changed, removed, room)
    }

    /// What changed since the previous call (the first call after creation reports the config), at
    /// most `limit` sessions of it, so a persist cycle holds the pool's lock for a bounded time.
    ///
    /// Removals come oldest first and before any upsert: an upsert is only handed out once every
    /// earlier removal has been, so applying the sets in the order they were taken is always right.
    /// Upserts come newest first, so a session changed during a long backlog does not wait for it.
    pub fn take_changes(&mut self, limit: usize) -> ChangeSet<'_> {
        let (config_changed, removed, room) = self.take_removals(limit);
        let mut slots = Vec::new();
        if let Some(room) = room {
            let keep = self.changes.dirty.len().saturating_sub(room);
            for slot in self.changes.dirty.split_off(keep) {
                if self.take_dirty(slot) && self.slots[slot as usize].occupied {
                    slots.push(slot);
                }
            }
        }
        self.change_set(config_changed, removed, slots)
    }

    /// Like [`Pool::take_changes`], but the upserts in id order, from the first id after `after`.
    /// Returns where the next call goes on, `None` once the walk reached the last id.
    ///
    /// A large backlog is written in id order so that each chunk lands in one place of the state
    /// file's B-tree: a fill of a million random ids taken in any other order would rewrite most of
    /// the tree with every chunk.
    pub fn take_changes_by_id(
        &mut self,
        after: Option<&SessionId>,
        limit: usize,
    ) -> (ChangeSet<'_>, Option<SessionId>) {
        let (config_changed, removed, room) = self.take_removals(limit);
        let mut slots = Vec::new();
        let mut next = after.cloned();
        if let Some(room) = room.filter(|room| *room > 0) {
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            // Visit a bounded number of ids per call, dirty or not, so the lock is held briefly.
            let visited: Vec<SessionId> =
                self.ordered.range::<SessionId, _>((start, Bound::Unbounded)).take(room.max(1) * 8).cloned().collect();
            next = None;
            for id in visited {
                if slots.len() == room {
                    break;
                }
                let slot = self.by_id[&id];
                if self.take_dirty(slot) {
                    slots.push(slot);
                }
                next = Some(id);
            }
            if next.as_ref().is_some_and(|last| self.ordered.last() == Some(last)) {
                next = None;
            }
            if next.is_none() {
                let occupied = &self.slots;
                self.changes.dirty.retain(|&slot| occupied[slot as usize].dirty);
            }
        }
        (self.change_set(config_changed, removed, slots), next)
    }

    fn change_set(&self, config_changed: bool, removed: Vec<SessionId>, slots: Vec<u32>) -> ChangeSet<'_> {
        ChangeSet {
            config_changed,
            removed,
            upserted: slots.into_iter().map(|slot| self.session_at(slot)).collect(),
            more: self.pending_changes() > 0,
        }
    }

    /// The counts at `now`.
    pub fn counts(&mut self, now: Timestamp) -> PoolCounts {
        self.tick(now);
        let sessions = self.by_id.len();
        PoolCounts { sessions, usable: self.usable, retired: sessions - self.usable, leased: self.leased }
    }

    /// Applies the clock: ends leases past their time, retires expired sessions, purges retired ones
    /// past the retention. Amortized O(log n) per due event, nothing when nothing is due.
    pub fn tick(&mut self, now: Timestamp) {
        while let Some(due) = self.lease_ends.pop_due(now) {
            if let Some(slot) = self.live_slot(due) {
                self.transition(slot, now, |s| {
                    if s.lease.is_some_and(|l| l.until <= now) {
                        s.lease = None;
                    }
                });
            }
        }
        while let Some(due) = self.expiries.pop_due(now) {
            if let Some(slot) = self.live_slot(due) {
                self.transition(slot, now, |s| {
                    s.settle(now);
                });
            }
        }
        while let Some(due) = self.purges.pop_due(now) {
            if let Some(slot) = self.live_slot(due) {
                self.remove_slot(slot);
            }
        }
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

    /// The earliest time this pool may purge a session: its next purge, or its next expiry plus the
    /// retention (either may be a stale entry, which only makes the time early).
    fn next_release(&self) -> Option<Timestamp> {
        let purge = self.purges.next_at();
        let expiry = self.expiries.next_at().map(|at| session::saturating_add(at, self.retention));
        purge.into_iter().chain(expiry).min()
    }

    /// Hands out a usable session: fills the pool up to `max_pool_size` usable sessions, then picks
    /// one uniformly among those not leased. With `lease`, the session is leased for that long.
    ///
    /// # Errors
    /// [`PoolError::NoSessionAvailable`] when every usable session is leased and the pool cannot
    /// grow (it is full, or `--max-sessions` is reached).
    pub fn acquire(&mut self, lease: Option<TimeDelta>, now: Timestamp) -> Result<&Session, PoolError> {
        self.tick(now);
        let missing = (self.config.max_pool_size as usize).saturating_sub(self.usable);
        if missing > 0 {
            let granted = self.budget.try_reserve(missing);
            for _ in 0..granted {
                let session = self.new_session(self.generate_id(), Arc::clone(&self.config.session), now);
                self.insert(session, true, now);
            }
        }
        if self.free.is_empty() {
            self.metrics.exhausted.increment(1);
            return Err(PoolError::NoSessionAvailable);
        }
        let slot = self.pick();
        self.leasing = lease.is_some();
        // Before the lease takes the session out of the free vector: a leased session usually comes
        // back before the next acquire, which then sees the length seen here.
        self.warm_ahead();
        let entry = &self.slots[slot as usize];
        self.recent.remember(self.recent.hash(&entry.session.id), slot, entry.generation);
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
            return Err(PoolError::LimitReached(format!(
                "the server holds its maximum of {} sessions (--max-sessions)",
                self.budget.max()
            )));
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
        let entry = &mut self.slots[slot as usize];
        if entry.occupied {
            edit(&mut entry.session.user_data, &mut entry.session.cookies);
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

    /// A good use (SEMANTICS.md); a matching `lease_id` also ends the lease.
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

    /// A bad use (SEMANTICS.md); a matching `lease_id` also ends the lease.
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

    /// What a crawler does with each response's status (SEMANTICS.md, `status_code`).
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
        let state = self.slots[slot as usize].state;
        if state != SlotState::Retired {
            let current = self.session_at(slot).lease.map(|l| l.id);
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
            .filter_map(|id| self.by_id.get(id).map(|slot| &self.slots[*slot as usize]))
            .filter(|slot| match state {
                StateFilter::All => true,
                StateFilter::Usable => matches!(slot.state, SlotState::Free | SlotState::Leased),
                StateFilter::Retired => slot.state == SlotState::Retired,
                StateFilter::Leased => slot.state == SlotState::Leased,
            })
            .filter(|slot| slot.occupied)
            .map(|slot| &slot.session);
        let page: Vec<&Session> = matching.by_ref().take(limit).collect();
        let next = match (matching.next(), page.last()) {
            (Some(_), Some(last)) => Some(last.id.clone()),
            _ => None,
        };
        (page, next)
    }

    /// Every session held, in id order, as of the last call (call [`Pool::tick`] first for `now`).
    pub fn sessions(&self) -> impl Iterator<Item = &Session> + '_ {
        self.ordered
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .map(|slot| &self.slots[*slot as usize])
            .filter(|slot| slot.occupied)
            .map(|slot| &slot.session)
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

    fn find(&mut self, id: &str, now: Timestamp) -> Result<u32, PoolError> {
        self.tick(now);
        self.lookup(id).ok_or_else(|| PoolError::SessionNotFound(id.to_owned()))
    }

    /// The slot of the session `id`: the table of recent sessions first, the id map if it misses (a
    /// session found there goes into the table, so the calls that usually follow skip the map).
    fn lookup(&self, id: &str) -> Option<u32> {
        let hash = self.recent.hash(id);
        if let Some((slot, generation)) = self.recent.candidate(hash) {
            let entry = &self.slots[slot as usize];
            if entry.generation == generation && entry.occupied && entry.session.id == *id {
                return Some(slot);
            }
        }
        let slot = self.by_id.get(id).copied()?;
        self.recent.remember(hash, slot, self.slots[slot as usize].generation);
        Some(slot)
    }

    /// A slot chosen uniformly among those holding a free session; `free` must not be empty.
    ///
    /// When at least four in five slots are free (the usual state: leases are short and retired
    /// sessions few) it draws a slot and draws again when that one is not free. Rejection keeps the
    /// choice exactly uniform among free slots, and a pick reads only its own slot, not the free
    /// vector as well: in a pool far larger than the caches that is one DRAM line less. After
    /// [`SLOT_DRAWS`] misses it draws from the free vector; each route gives every free session the
    /// same chance, so their mix does too.
    ///
    /// Every redraw reads another slot, so the threshold is where the two routes cost the same: at
    /// 1M sessions (`cargo run --release --example pick_cost`), 10% leased cost 45 ns a cycle, 19%
    /// 49 ns, and the free vector 51 ns at 21% or 40%; 40% drawn over the slots was 63 ns.
    fn pick(&mut self) -> u32 {
        if self.dense() {
            for _ in 0..SLOT_DRAWS {
                let slot = self.picks.index(self.slots.len());
                if self.slots[slot].state == SlotState::Free {
                    return slot as u32;
                }
            }
        }
        self.free[self.picks.index(self.free.len())]
    }

    /// Whether picks draw over the slots (see [`Pool::pick`]).
    fn dense(&self) -> bool {
        self.free.len() * 5 >= self.slots.len() * 4
    }

    /// Prefetches what the coming picks will touch: the slot a dense pick will draw, or, for a pick
    /// from the free vector, the entry it will read and, a few picks later, the slot that entry
    /// names, so each load finds the line its stage asked for (see [`ahead`]). While clients lease,
    /// a dense pick also prefetches what taking its slot out of the free vector reads: the slot's
    /// `free_pos` and, once that has arrived, the free-vector entry it names.
    fn warm_ahead(&mut self) {
        use ahead::{FAR, NEAR};
        let fresh = self.picks.take_fresh();
        let len = self.free.len();
        if len == 0 {
            return;
        }
        // Every word that reached a stage since the last call, not only the last one: a pick that
        // drew again took several, and each of them is some coming draw's.
        let reached = |stage: usize| (stage + 1).saturating_sub(fresh)..=stage;
        if self.dense() {
            for distance in reached(FAR) {
                prefetch_hot(&self.slots[ahead::position(self.picks.peek(distance), self.slots.len())]);
            }
            if self.leasing {
                let far = &self.slots[ahead::position(self.picks.peek(FAR), self.slots.len())];
                prefetch::<NTA, _>(&far.free_pos);
                let near = &self.slots[ahead::position(self.picks.peek(NEAR), self.slots.len())];
                if let Some(entry) = self.free.get(near.free_pos as usize) {
                    prefetch::<NTA, _>(entry);
                }
            }
        } else {
            for distance in reached(FAR) {
                prefetch::<T0, _>(&self.free[ahead::position(self.picks.peek(distance), len)]);
            }
            for distance in reached(NEAR) {
                prefetch_hot(&self.slots[self.free[ahead::position(self.picks.peek(distance), len)] as usize]);
            }
        }
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

    fn next_proxy_url(&mut self, id: &str) -> Option<Box<str>> {
        if let Some(template) = &self.config.proxy_url_template {
            return Some(template.replace(SESSION_ID_PLACEHOLDER, id).into_boxed_str());
        }
        if self.config.proxy_urls.is_empty() {
            return None;
        }
        let url = &self.config.proxy_urls[self.proxy_cursor % self.config.proxy_urls.len()];
        self.proxy_cursor = self.proxy_cursor.wrapping_add(1);
        Some(url.clone().into_boxed_str())
    }

    /// A fresh session with the pool's next sticky proxy.
    fn new_session(&mut self, id: SessionId, settings: Arc<SessionSettings>, now: Timestamp) -> Session {
        let mut session = Session::new(id, settings, now);
        session.proxy_url = self.next_proxy_url(&session.id);
        session
    }

    /// Puts a session in a slot and files it; its budget must already be reserved. `fresh` says it
    /// was created now (for the metrics), not restored or imported.
    fn insert(&mut self, session: Session, fresh: bool, now: Timestamp) -> u32 {
        let id = session.id.clone();
        let expires_at = session.retirement.is_none().then_some(session.expires_at);
        let slot = match self.vacant.pop() {
            Some(slot) => {
                let entry = &mut self.slots[slot as usize];
                entry.session = session;
                entry.occupied = true;
                slot
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    state: SlotState::Vacant,
                    dirty: false,
                    occupied: true,
                    session,
                    free_pos: NOT_FREE,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.slots[slot as usize].generation;
        if let Some(at) = expires_at {
            self.expiries.push(Due { at, slot, generation });
            self.budget.release.note(session::saturating_add(at, self.retention));
        }
        self.by_id.insert(id.clone(), slot);
        self.ordered.insert(id);
        if fresh {
            self.metrics.created.increment(1);
        }
        let session = &mut self.slots[slot as usize].session;
        let was_retired = session.retirement.is_some();
        session.settle(now);
        let retirement = session.retirement;
        let lease_until = session.lease.map(|l| l.until);
        self.mark_dirty(slot);
        self.refile(slot, retirement, !was_retired, lease_until);
        slot
    }

    /// The one place that changes a filed session: runs `change`, settles retirement, then refiles.
    fn transition(&mut self, slot: u32, now: Timestamp, change: impl FnOnce(&mut Session)) {
        let entry = &mut self.slots[slot as usize];
        if !entry.occupied {
            return;
        }
        let session = &mut entry.session;
        let was_retired = session.retirement.is_some();
        let lease_before = session.lease;
        change(session);
        session.settle(now);
        let retired_now = session.retirement.filter(|_| !was_retired);
        let new_lease = session.lease.filter(|l| Some(*l) != lease_before).map(|l| l.until);
        self.mark_dirty(slot);
        self.refile(slot, retired_now, true, new_lease);
    }

    /// Moves the slot between free, leased and retired to match its session, keeping every count and
    /// the free vector in step, and queues what the clock will do to it: `retirement` (a retirement
    /// to purge later, counted in the metrics when `count`) and `lease_until` (a new lease to end).
    fn refile(&mut self, slot: u32, retirement: Option<Retirement>, count: bool, lease_until: Option<Timestamp>) {
        let entry = &self.slots[slot as usize];
        if !entry.occupied {
            return;
        }
        let session = &entry.session;
        let (old, new, generation) = (entry.state, SlotState::of(session), entry.generation);
        if old != new {
            self.unfile(slot, old);
            match new {
                SlotState::Free => {
                    self.slots[slot as usize].free_pos = self.free.len() as u32;
                    self.free.push(slot);
                    self.usable += 1;
                }
                SlotState::Leased => {
                    self.leased += 1;
                    self.usable += 1;
                }
                SlotState::Retired | SlotState::Vacant => {}
            }
            self.slots[slot as usize].state = new;
        }
        if let Some(until) = lease_until.filter(|_| new == SlotState::Leased) {
            self.lease_ends.push(Due { at: until, slot, generation });
        }
        if let Some(retirement) = retirement.filter(|_| new == SlotState::Retired) {
            if count {
                self.metrics.retirement(retirement.reason).increment(1);
            }
            let at = session::saturating_add(retirement.at, self.retention);
            self.purges.push(Due { at, slot, generation });
            self.budget.release.note(at);
        }
        self.compact_queues();
    }

    /// Drops the stale entries of any queue that has doubled since its last compaction.
    fn compact_queues(&mut self) {
        let slots = &self.slots;
        let session = |due: &Due| {
            slots.get(due.slot as usize).filter(|e| e.generation == due.generation && e.occupied).map(|e| &e.session)
        };
        if self.lease_ends.bloated() {
            self.lease_ends.compact(|due| session(due).and_then(|s| s.lease).is_some_and(|l| l.until == due.at));
        }
        if self.expiries.bloated() {
            self.expiries.compact(|due| session(due).is_some_and(|s| s.retirement.is_none()));
        }
        if self.purges.bloated() {
            self.purges.compact(|due| session(due).is_some());
        }
    }

    fn mark_dirty(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if !entry.dirty {
            entry.dirty = true;
            self.changes.dirty.push(slot);
            self.changes.dirty_count += 1;
        }
    }

    /// Clears the slot's dirty flag; whether it was set.
    fn take_dirty(&mut self, slot: u32) -> bool {
        let was = std::mem::take(&mut self.slots[slot as usize].dirty);
        if was {
            self.changes.dirty_count -= 1;
        }
        was
    }

    fn remove_free(&mut self, slot: u32) {
        let pos = self.slots[slot as usize].free_pos;
        self.free.swap_remove(pos as usize);
        if let Some(&moved) = self.free.get(pos as usize) {
            self.slots[moved as usize].free_pos = pos;
        }
        self.slots[slot as usize].free_pos = NOT_FREE;
    }

    /// Takes the slot out of the counts and the free vector of `state`, the state it is filed in.
    fn unfile(&mut self, slot: u32, state: SlotState) {
        match state {
            SlotState::Free => {
                self.remove_free(slot);
                self.usable -= 1;
            }
            SlotState::Leased => {
                self.leased -= 1;
                self.usable -= 1;
            }
            SlotState::Retired | SlotState::Vacant => {}
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        self.unfile(slot, self.slots[slot as usize].state);
        let placeholder = Session::new(SessionId::default(), Arc::clone(&self.config.session), self.created_at);
        let entry = &mut self.slots[slot as usize];
        if std::mem::take(&mut entry.occupied) {
            let session = std::mem::replace(&mut entry.session, placeholder);
            self.by_id.remove(&session.id);
            self.ordered.remove(&session.id);
            self.budget.release(1);
            self.changes.removed.push(session.id);
        }
        entry.generation = entry.generation.wrapping_add(1);
        entry.state = SlotState::Vacant;
        self.take_dirty(slot);
        self.vacant.push(slot);
    }

    fn live_slot(&self, due: Due) -> Option<u32> {
        let entry = self.slots.get(due.slot as usize)?;
        (entry.generation == due.generation && entry.occupied).then_some(due.slot)
    }

    fn session_at(&self, slot: u32) -> &Session {
        let entry = &self.slots[slot as usize];
        assert!(entry.occupied, "a filed slot holds a session");
        &entry.session
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let mut free = 0;
        let mut leased = 0;
        let mut retired = 0;
        for (index, entry) in self.slots.iter().enumerate() {
            if entry.state != SlotState::Free {
                assert_eq!(entry.free_pos, NOT_FREE);
            }
            if !entry.occupied {
                assert_eq!(entry.state, SlotState::Vacant);
                assert!(entry.session.id.is_empty(), "a vacant slot holds only the placeholder");
                continue;
            }
            let session = &entry.session;
            let queued = |queue: &Queue, at: Timestamp| {
                queue
                    .heap
                    .iter()
                    .any(|Reverse(d)| d.slot as usize == index && d.generation == entry.generation && d.at == at)
            };
            match (session.retirement, session.lease) {
                (Some(retirement), _) => {
                    assert!(queued(&self.purges, session::saturating_add(retirement.at, self.retention)));
                }
                (None, lease) => {
                    assert!(queued(&self.expiries, session.expires_at), "expiry of {} lost", session.id);
                    if let Some(lease) = lease {
                        assert!(queued(&self.lease_ends, lease.until), "lease end of {} lost", session.id);
                    }
                }
            }
            assert_eq!(self.by_id.get(&session.id), Some(&(index as u32)));
            assert_eq!(self.lookup(&session.id), Some(index as u32));
            match entry.state {
                SlotState::Free => {
                    free += 1;
                    assert_eq!(self.free[entry.free_pos as usize], index as u32);
                    assert!(session.retirement.is_none() && session.lease.is_none());
                }
                SlotState::Leased => {
                    leased += 1;
                    assert!(session.retirement.is_none() && session.lease.is_some());
                }
                SlotState::Retired => {
                    retired += 1;
                    assert!(session.retirement.is_some() && session.lease.is_none());
                }
                SlotState::Vacant => panic!("a slot holding a session is filed as vacant"),
            }
        }
        assert_eq!(self.free.len(), free);
        assert_eq!(self.leased, leased);
        assert_eq!(self.usable, free + leased);
        assert_eq!(self.by_id.len(), free + leased + retired);
        assert_eq!(self.ordered.len(), self.by_id.len());
        let mut vacant = self.vacant.clone();
        vacant.sort_unstable();
        vacant.dedup();
        assert_eq!(vacant.len(), self.vacant.len(), "a slot is listed as vacant twice");
        let unoccupied: Vec<u32> = (0..self.slots.len() as u32).filter(|&i| !self.slots[i as usize].occupied).collect();
        assert_eq!(vacant, unoccupied, "the vacant list is exactly the slots without a session");
    }
}

fn parse_lease_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

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
        loop {
            let pool = match self.lookup(name) {
                Some(pool) => pool,
                None if create => self.insert(name, self.defaults.clone(), now)?.0,
                None => return Err(PoolError::PoolNotFound(name.to_owned())),
            };
            let guard = pool.lock_owned().await;
            if !guard.deleted {
                return Ok(guard);
            }
        }
    }

    /// Creates the pool with `config`, or reconfigures it; returns the locked pool and whether it
    /// was created.
    ///
    /// # Errors
    /// [`PoolError::LimitReached`] past `--max-pools`.
    pub async fn put(&self, name: &str, config: PoolConfig, now: Timestamp) -> Result<(PoolGuard, bool), PoolError> {
        loop {
            let (pool, created) = match self.lookup(name) {
                Some(pool) => (pool, false),
                None => self.insert(name, config.clone(), now)?,
            };
            let mut guard = pool.lock_owned().await;
            if guard.deleted {
                continue;
            }
            if !created {
                guard.reconfigure(config);
            }
            return Ok((guard, created));
        }
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
        loop {
            let (pool, created) = match self.lookup(name) {
                Some(pool) => (pool, false),
                None => self.insert(name, config.clone(), now)?,
            };
            let guard = pool.lock_owned().await;
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
    use super::*;
    use chrono::DateTime;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn t0() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&chrono::Utc)
    }

    fn secs(s: i64) -> TimeDelta {
        TimeDelta::seconds(s)
    }

    fn pool_with(max_pool_size: u32, max_sessions: usize) -> Pool {
        let config = PoolConfig { max_pool_size, ..PoolConfig::default() };
        let mut pool = Pool::new("p", config, secs(600), Arc::new(SessionBudget::new(max_sessions)), t0());
        pool.seed(7);
        pool
    }

    fn create(pool: &mut Pool, id: &str, settings: Option<SessionSettings>) -> SessionId {
        let new = NewSession { id: Some(id.into()), settings, ..NewSession::default() };
        pool.create(new, t0()).unwrap().id.clone()
    }

    #[test]
    fn the_first_acquire_fills_the_pool() {
        let mut pool = pool_with(7, 100);
        pool.acquire(None, t0()).unwrap();
        assert_eq!(pool.counts(t0()), PoolCounts { sessions: 7, usable: 7, retired: 0, leased: 0 });
        pool.check_invariants();
    }

    #[test]
    fn acquire_replaces_a_retired_session_and_never_returns_it() {
        let mut pool = pool_with(3, 100);
        let first = pool.acquire(None, t0()).unwrap().id.clone();
        pool.retire(&first, None, t0()).unwrap();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let s = pool.acquire(None, t0()).unwrap();
            assert_ne!(s.id, first);
            seen.insert(s.id.clone());
        }
        assert_eq!(seen.len(), 3, "every free session gets picked");
        assert_eq!(pool.counts(t0()), PoolCounts { sessions: 4, usable: 3, retired: 1, leased: 0 });
        pool.check_invariants();
    }

    #[test]
    fn a_hint_for_a_removed_session_never_finds_the_slot_s_next_tenant() {
        let mut pool = pool_with(1, 100);
        let first = pool.acquire(None, t0()).unwrap().id.clone();
        pool.delete(&first, t0()).unwrap();
        let second = create(&mut pool, "second", None);
        assert!(pool.get(&first, t0()).is_none());
        assert_eq!(pool.mark_good(&second, None, t0()).unwrap().usage_count, 1);
        create(&mut pool, &first, None);
        assert_eq!(pool.mark_good(&first, None, t0()).unwrap().usage_count, 1);
        assert_eq!(pool.get(&second, t0()).unwrap().usage_count, 1);
        pool.check_invariants();
    }

    #[test]
    fn a_session_found_in_the_id_map_is_remembered_as_recent() {
        let mut pool = pool_with(0, 100);
        let id = create(&mut pool, "created", None);
        let hinted = |pool: &Pool| pool.recent.candidate(pool.recent.hash(&id)).map(|(slot, _)| slot);
        assert_eq!(hinted(&pool), None, "creating does not fill the table");
        pool.mark_good(&id, None, t0()).unwrap();
        let slot = pool.by_id.get(&*id).copied();
        assert!(slot.is_some());
        assert_eq!(hinted(&pool), slot, "the mark found it in the map and remembered it");
        pool.delete(&id, t0()).unwrap();
        create(&mut pool, "other", None);
        assert!(pool.get(&id, t0()).is_none(), "a stale hint never finds the slot's next tenant");
        pool.check_invariants();
    }

    #[test]
    fn queues_drop_stale_entries_and_keep_live_ones() {
        let mut pool = pool_with(10, 100);
        let id = pool.acquire(None, t0()).unwrap().id.clone();
        for i in 0..10_000 {
            let session = pool.acquire(Some(secs(30 + i)), t0()).unwrap();
            let (leased, lease) = (session.id.clone(), session.lease.unwrap().id.to_string());
            pool.release(&leased, &lease, t0()).unwrap();
        }
        assert!(pool.lease_ends.len() <= 2 * QUEUE_COMPACT_MIN, "{} entries", pool.lease_ends.len());
        let lease = pool.acquire(Some(secs(5)), t0()).unwrap().lease.unwrap();
        assert!(pool.lease_ends.len() <= 2 * QUEUE_COMPACT_MIN);
        pool.tick(t0() + secs(5));
        assert_eq!(pool.counts(t0() + secs(5)).leased, 0, "the live lease {lease:?} survived compaction");
        pool.delete(&id, t0()).unwrap();
        pool.check_invariants();
    }

    #[test]
    fn picks_are_uniform_among_free_sessions_drawn_over_slots_or_from_the_free_vector() {
        // (retired, leased) of 10 usable sessions. Retiring makes acquire top the pool up, so
        // retired slots sit among the ones a dense pick draws over. The first four keep four in
        // five slots free (draws over the slots, with rejections but the first); 5 or 7 leased
        // leave picks to the free vector.
        let cases = [(0, 0, true), (0, 2, true), (2, 0, true), (1, 1, true), (0, 5, false), (0, 7, false)];
        for (retired, leased, dense) in cases {
            let mut pool = pool_with(10, 100);
            pool.acquire(None, t0()).unwrap();
            let mut unavailable: HashSet<SessionId> = HashSet::new();
            for _ in 0..retired {
                let id = pool.acquire(None, t0()).unwrap().id.clone();
                pool.retire(&id, None, t0()).unwrap();
                unavailable.insert(id);
            }
            for _ in 0..leased {
                unavailable.insert(pool.acquire(Some(secs(300)), t0()).unwrap().id.clone());
            }
            assert_eq!(pool.dense(), dense);
            let draws = 500_000;
            let mut counts: HashMap<SessionId, u32> = HashMap::new();
            for _ in 0..draws {
                *counts.entry(pool.acquire(None, t0()).unwrap().id.clone()).or_default() += 1;
            }
            assert!(counts.keys().all(|id| !unavailable.contains(id)), "a leased or retired session was handed out");
            assert_eq!(counts.len(), 10 - leased, "every free session is picked");
            // Chi-square against the uniform distribution. 30 is far in the tail for at most 9
            // degrees of freedom (p < 0.001); 1% of the draws going to one session on top of its
            // share scores over 200 (225 with 3 free sessions, more with more).
            let expected = f64::from(draws) / counts.len() as f64;
            let chi2: f64 = counts.values().map(|&n| (f64::from(n) - expected).powi(2) / expected).sum();
            assert!(chi2 < 30.0, "{retired} retired, {leased} leased: chi-square {chi2:.1} over {counts:?}");
            pool.check_invariants();
        }
    }

    #[test]
    fn what_a_pick_reads_fills_one_aligned_pair_of_cache_lines() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Slot>(), HOT_BYTES);
        // Session is repr(C): the hot fields come first, and `retirement` is the last of them.
        let session = offset_of!(Slot, session);
        let hot_end = session + offset_of!(Session, retirement) + size_of::<Option<Retirement>>();
        assert!(hot_end <= HOT_BYTES, "the hot fields end at byte {hot_end}");
        for field in [
            offset_of!(Session, id),
            offset_of!(Session, error_score),
            offset_of!(Session, settings),
            offset_of!(Session, usage_count),
            offset_of!(Session, expires_at),
            offset_of!(Session, lease),
        ] {
            assert!(field < offset_of!(Session, retirement));
        }
        for flag in [offset_of!(Slot, generation), offset_of!(Slot, state), offset_of!(Slot, dirty)] {
            assert!(flag < session);
        }
        assert!(offset_of!(Slot, occupied) < session);
    }

    #[test]
    fn leases_are_exclusive_and_end_on_time() {
        let mut pool = pool_with(2, 100);
        let a = pool.acquire(Some(secs(30)), t0()).unwrap().id.clone();
        let b = pool.acquire(Some(secs(2)), t0()).unwrap().id.clone();
        assert_ne!(a, b);
        assert_eq!(pool.acquire(None, t0()).unwrap_err(), PoolError::NoSessionAvailable);
        assert_eq!(pool.counts(t0()).leased, 2);
        let freed = pool.acquire(Some(secs(30)), t0() + secs(2)).unwrap();
        assert_eq!(freed.id, b, "the expired lease freed b");
        pool.check_invariants();
    }

    #[test]
    fn a_lease_ends_only_with_its_own_id() {
        let mut pool = pool_with(1, 100);
        let session = pool.acquire(Some(secs(30)), t0()).unwrap();
        let (id, lease) = (session.id.clone(), session.lease.unwrap());
        let other = Uuid::new_v4().simple().to_string();
        assert!(matches!(pool.release(&id, &other, t0()), Err(PoolError::LeaseMismatch(_))));
        pool.mark_good(&id, Some(&other), t0()).unwrap();
        assert!(pool.get(&id, t0()).unwrap().lease.is_some(), "a stale id ends nothing");
        let session = pool.mark_good(&id, Some(&lease.id.simple().to_string()), t0()).unwrap();
        assert!(session.lease.is_none());
        assert_eq!(session.usage_count, 2);
        assert!(matches!(pool.release(&id, &lease.id.to_string(), t0()), Err(PoolError::LeaseMismatch(_))));
        pool.retire(&id, None, t0()).unwrap();
        assert!(pool.release(&id, "anything", t0()).is_ok(), "a late release on a retired session is fine");
        pool.check_invariants();
    }

    #[test]
    fn expiry_retires_at_expires_at_and_retention_purges() {
        let mut pool = pool_with(0, 100);
        let short = SessionSettings { max_age_secs: 1.0, ..SessionSettings::default() };
        let id = create(&mut pool, "short", Some(short));
        assert_eq!(pool.counts(t0()).usable, 1);
        let later = t0() + secs(5);
        let session = pool.get(&id, later).unwrap();
        let retirement = session.retirement.unwrap();
        assert_eq!((retirement.reason, retirement.at), (RetiredReason::Expired, t0() + secs(1)));
        assert_eq!(pool.counts(later), PoolCounts { sessions: 1, usable: 0, retired: 1, leased: 0 });
        assert!(pool.get(&id, t0() + secs(600)).is_some(), "readable within the retention");
        assert!(pool.get(&id, t0() + secs(601)).is_none(), "purged after it");
        assert_eq!(pool.budget.held(), 0);
        pool.check_invariants();
    }

    #[test]
    fn a_consume_only_pool_hands_out_what_a_producer_made() {
        let mut pool = pool_with(0, 100);
        assert_eq!(pool.acquire(None, t0()).unwrap_err(), PoolError::NoSessionAvailable);
        create(&mut pool, "warm", None);
        assert_eq!(&*pool.acquire(None, t0()).unwrap().id, "warm");
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn explicit_sessions_may_exceed_the_pool_size_and_then_acquire_creates_nothing() {
        let mut pool = pool_with(2, 100);
        for i in 0..4 {
            create(&mut pool, &format!("s{i}"), None);
        }
        pool.acquire(None, t0()).unwrap();
        assert_eq!(pool.len(), 4);
    }

    #[test]
    fn the_session_budget_is_shared_and_enforced() {
        let mut pool = pool_with(10, 3);
        pool.acquire(None, t0()).unwrap();
        assert_eq!(pool.len(), 3, "acquire fills only as far as the budget allows");
        let new = NewSession { id: Some("x".into()), ..NewSession::default() };
        assert!(matches!(pool.create(new, t0()), Err(PoolError::LimitReached(_))));
        let first = pool.list(StateFilter::All, None, 1, t0()).0[0].id.clone();
        pool.delete(&first, t0()).unwrap();
        create(&mut pool, "x", None);
        assert_eq!(pool.budget.held(), 3);
    }

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

    #[test]
    fn the_release_time_is_the_earliest_note_and_a_walk_never_makes_it_late() {
        let release = ReleaseTime::default();
        assert!(!release.due(t0() + secs(1_000_000_000)), "nothing is known at first");
        release.note(t0() + secs(8));
        release.note(t0() + secs(5));
        assert!(!release.due(t0() + secs(4)) && release.due(t0() + secs(5)), "the earliest note wins");
        // A walk that found the next purge at +30 s (the one at +5 s ran) puts it in place.
        release.begin_walk();
        release.end_walk(Some(t0() + secs(30)));
        assert!(!release.due(t0() + secs(29)) && release.due(t0() + secs(30)));
        // Notes during a walk, earlier or later than the time in place but earlier than what the walk
        // finds (their pools were visited before they queued them), are not lost.
        for noted in [20, 40] {
            release.begin_walk();
            release.note(t0() + secs(noted));
            release.end_walk(Some(t0() + secs(50)));
            assert!(!release.due(t0() + secs(noted - 1)) && release.due(t0() + secs(noted)), "{noted}");
        }
        // A walk that found nothing queued anywhere, with no note meanwhile.
        release.begin_walk();
        release.end_walk(None);
        assert!(!release.due(t0() + secs(1_000_000_000)));
        // Outside a walk, a note later than the time in place changes nothing.
        release.note(t0() + secs(10));
        release.note(t0() + secs(60));
        assert!(!release.due(t0() + secs(9)) && release.due(t0() + secs(10)));
        // Sub-millisecond times (fractional max_age_secs, imported timestamps) are kept to the
        // microsecond, so a walk a moment before one is not repeated for a whole millisecond.
        release.begin_walk();
        release.end_walk(Some(t0() + TimeDelta::microseconds(1_500)));
        assert!(!release.due(t0() + TimeDelta::milliseconds(1)));
        assert!(release.due(t0() + TimeDelta::microseconds(1_500)));
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

    #[test]
    fn creating_an_existing_id_changes_nothing() {
        let mut pool = pool_with(0, 100);
        create(&mut pool, "a", None);
        let again = NewSession { id: Some("a".into()), ..NewSession::default() };
        assert_eq!(pool.create(again, t0()).unwrap_err(), PoolError::SessionExists("a".into()));
        assert_eq!((pool.len(), pool.budget.held()), (1, 1));
    }

    #[test]
    fn listing_pages_in_id_order_by_state() {
        let mut pool = pool_with(0, 100);
        for id in ["d", "b", "a", "e", "c"] {
            create(&mut pool, id, None);
        }
        pool.retire("a", None, t0()).unwrap();
        let ids = |page: Vec<&Session>| page.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
        let (page, next) = pool.list(StateFilter::All, None, 2, t0());
        assert_eq!((ids(page), next.as_deref()), (vec!["a".to_string(), "b".into()], Some("b")));
        let (page, next) = pool.list(StateFilter::All, Some("b"), 2, t0());
        assert_eq!((ids(page), next.as_deref()), (vec!["c".to_string(), "d".into()], Some("d")));
        let (page, next) = pool.list(StateFilter::All, Some("d"), 2, t0());
        assert_eq!((ids(page), next), (vec!["e".to_string()], None));
        assert_eq!(ids(pool.list(StateFilter::Retired, None, 10, t0()).0), vec!["a"]);
        assert_eq!(pool.list(StateFilter::Usable, None, 10, t0()).0.len(), 4);
    }

    #[test]
    fn proxies_are_sticky_round_robin_or_templated() {
        let mut pool = pool_with(3, 100);
        pool.reconfigure(PoolConfig {
            max_pool_size: 3,
            proxy_urls: vec!["http://a:1".into(), "http://b:2".into()],
            ..PoolConfig::default()
        });
        pool.acquire(None, t0()).unwrap();
        let mut urls: Vec<_> =
            pool.list(StateFilter::All, None, 10, t0()).0.iter().map(|s| s.proxy_url.clone().unwrap()).collect();
        urls.sort();
        assert_eq!(urls, ["http://a:1".into(), "http://a:1".into(), "http://b:2".into()] as [Box<str>; 3]);

        pool.reconfigure(PoolConfig {
            proxy_url_template: Some("http://user-session-{session_id}:pw@gate:7000".into()),
            ..PoolConfig::default()
        });
        let id = create(&mut pool, "abc", None);
        assert_eq!(pool.get(&id, t0()).unwrap().proxy_url.as_deref(), Some("http://user-session-abc:pw@gate:7000"));
        let new = NewSession { id: Some("own".into()), proxy_url: Some(None), ..NewSession::default() };
        assert_eq!(pool.create(new, t0()).unwrap().proxy_url, None, "an explicit null means no proxy");
    }

    #[test]
    fn proxy_urls_are_validated_without_echoing_credentials() {
        assert!(validate_proxy_url("socks5h://user:pw@host:1080").is_ok());
        let err = validate_proxy_url("ftp://user:secret@host").unwrap_err();
        assert!(!err.contains("secret"));
        assert!(validate_proxy_url("not a url").is_err());
        let template = PoolConfig { proxy_url_template: Some("http://gate:1".into()), ..PoolConfig::default() };
        assert!(template.validate().is_err(), "a template without {{session_id}} is refused");
    }

    #[test]
    fn changes_report_what_moved_since_the_last_call_only() {
        let mut pool = pool_with(0, 100);
        let first = pool.take_changes(usize::MAX);
        assert!(first.config_changed && first.upserted.is_empty());
        create(&mut pool, "a", None);
        create(&mut pool, "b", None);
        assert!(pool.take_changes(usize::MAX).upserted.len() == 2);
        assert!(pool.take_changes(usize::MAX).is_empty(), "nothing changed since");
        pool.mark_good("a", None, t0()).unwrap();
        pool.mark_good("a", None, t0()).unwrap();
        pool.delete("b", t0()).unwrap();
        let changes = pool.take_changes(usize::MAX);
        let upserted: Vec<&str> = changes.upserted.iter().map(|s| &*s.id).collect();
        assert_eq!(upserted, ["a"]);
        assert_eq!(changes.removed, vec![SessionId::from("b")]);
        pool.acquire(None, t0()).unwrap();
        assert!(pool.take_changes(usize::MAX).is_empty(), "an acquire without a lease changes no session");
        let key = pool.key();
        pool.clear();
        assert_ne!(pool.key(), key, "a cleared pool is a new incarnation in the state file");
    }

    #[test]
    fn a_limited_take_hands_out_removals_before_any_upsert_and_the_newest_upserts_first() {
        let mut pool = pool_with(0, 100);
        pool.take_changes(usize::MAX);
        for id in ["a", "b", "c"] {
            create(&mut pool, id, None);
        }
        pool.take_changes(usize::MAX);
        pool.delete("a", t0()).unwrap();
        pool.delete("b", t0()).unwrap();
        create(&mut pool, "a", None);
        pool.mark_good("c", None, t0()).unwrap();
        assert_eq!(pool.pending_changes(), 4);

        let first = pool.take_changes(1);
        assert_eq!(first.removed, vec![SessionId::from("a")]);
        assert!(first.upserted.is_empty(), "the new `a` must not be written before the old one is removed");
        assert!(first.more);
        let second = pool.take_changes(2);
        assert_eq!(second.removed, vec![SessionId::from("b")]);
        let upserted: Vec<&str> = second.upserted.iter().map(|s| &*s.id).collect();
        assert_eq!(upserted, ["c"], "the newest change first");
        assert!(second.more);
        let third = pool.take_changes(2);
        let upserted: Vec<&str> = third.upserted.iter().map(|s| &*s.id).collect();
        assert_eq!(upserted, ["a"]);
        assert!(!third.more);
        assert_eq!(pool.pending_changes(), 0);
    }

    #[test]
    fn adopted_sessions_keep_their_state_and_are_filed_by_it() {
        let mut pool = pool_with(5, 100);
        let mut retired = Session::new(SessionId::from("old"), Arc::new(SessionSettings::default()), t0());
        retired.usage_count = 7;
        retired.retire(RetiredReason::Blocked, t0());
        pool.adopt(retired, true, t0()).unwrap();
        let mut leased = Session::new(SessionId::from("busy"), Arc::new(SessionSettings::default()), t0());
        leased.lease = Some(Lease { id: Uuid::new_v4(), until: t0() + secs(30) });
        pool.adopt(leased, true, t0()).unwrap();
        assert_eq!(pool.counts(t0()), PoolCounts { sessions: 2, usable: 1, retired: 1, leased: 1 });
        assert_eq!(pool.get("old", t0()).unwrap().usage_count, 7);
        let dup = Session::new(SessionId::from("old"), Arc::new(SessionSettings::default()), t0());
        assert_eq!(pool.adopt(dup, true, t0()).unwrap_err(), PoolError::SessionExists("old".into()));
        assert_eq!(pool.counts(t0() + secs(31)).leased, 0, "the adopted lease ends on time");
        assert!(pool.get("old", t0() + secs(601)).is_none(), "an adopted retired session is purged too");
        pool.check_invariants();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire { lease_secs: Option<i64> },
        Create { max_age_secs: u8, max_usage: u8 },
        Good(usize),
        Bad(usize),
        Retire(usize),
        Release(usize),
        Delete(usize),
        Status { pick: usize, code: u16, mark: bool },
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::option::of(1i64..20).prop_map(|lease_secs| Op::Acquire { lease_secs }),
            1 => (1u8..30, 1u8..6).prop_map(|(max_age_secs, max_usage)| Op::Create { max_age_secs, max_usage }),
            2 => any::<usize>().prop_map(Op::Good),
            2 => any::<usize>().prop_map(Op::Bad),
            1 => any::<usize>().prop_map(Op::Retire),
            1 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::Delete),
            1 => (any::<usize>(), prop_oneof![Just(200u16), Just(403), Just(500)], any::<bool>())
                .prop_map(|(pick, code, mark)| Op::Status { pick, code, mark }),
            2 => (0u16..5000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever happens, acquire hands out only usable, unleased sessions; counts add up; error
        /// scores stay >= 0; and retirement is never undone.
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..120), size in 0u32..6) {
            let mut pool = pool_with(size, 40);
            pool.retention = secs(10);
            let mut now = t0();
            let mut retired: HashSet<SessionId> = HashSet::new();
            let mut next_id = 0;
            for op in ops {
                let ids: Vec<SessionId> = pool.ordered.iter().cloned().collect();
                let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
                match op {
                    Op::Acquire { lease_secs } => {
                        let leased_before: HashSet<SessionId> = pool
                            .list(StateFilter::Leased, None, 1000, now).0.iter().map(|s| s.id.clone()).collect();
                        if let Ok(s) = pool.acquire(lease_secs.map(secs), now) {
                            prop_assert!(s.is_usable(now), "handed out an unusable session");
                            prop_assert!(!retired.contains(&s.id), "handed out a retired session");
                            prop_assert!(!leased_before.contains(&s.id), "handed out a leased session");
                        }
                    }
                    Op::Create { max_age_secs, max_usage } => {
                        next_id += 1;
                        let settings = SessionSettings {
                            max_age_secs: f64::from(max_age_secs),
                            max_usage_count: u32::from(max_usage),
                            ..SessionSettings::default()
                        };
                        let new = NewSession { id: Some(format!("c{next_id}")), settings: Some(settings), ..NewSession::default() };
                        let _ = pool.create(new, now);
                    }
                    Op::Good(i) => if let Some(id) = pick(i) { pool.mark_good(&id, None, now).unwrap(); },
                    Op::Bad(i) => if let Some(id) = pick(i) { pool.mark_bad(&id, None, now).unwrap(); },
                    Op::Retire(i) => if let Some(id) = pick(i) { pool.retire(&id, None, now).unwrap(); },
                    Op::Release(i) => if let Some(id) = pick(i) {
                        let lease = pool.get(&id, now).unwrap().lease.map(|l| l.id.simple().to_string());
                        if let Some(lease) = lease {
                            pool.release(&id, &lease, now).unwrap();
                        }
                    },
                    Op::Delete(i) => if let Some(id) = pick(i) {
                        pool.delete(&id, now).unwrap();
                        retired.remove(&id);
                        prop_assert!(pool.get(&id, now).is_none(), "a deleted id is still found");
                    },
                    Op::Status { pick: i, code, mark } => if let Some(id) = pick(i) {
                        let report = StatusReport { status_code: code, mark, ..StatusReport::default() };
                        pool.report_status(&id, &report, None, now).unwrap();
                    },
                    Op::Advance(ms) => now += TimeDelta::milliseconds(i64::from(ms)),
                }
                pool.tick(now);
                pool.check_invariants();
                for s in pool.slots.iter().filter(|entry| entry.occupied).map(|entry| &entry.session) {
                    prop_assert!(s.error_score >= 0.0);
                    if retired.contains(&s.id) {
                        prop_assert!(s.retirement.is_some(), "a retired session came back");
                    }
                    if s.retirement.is_some() {
                        retired.insert(s.id.clone());
                    }
                }
                prop_assert_eq!(pool.budget.held(), pool.len());
            }
        }
    }
}
