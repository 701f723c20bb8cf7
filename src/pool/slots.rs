//! Slot storage and counts: where a pool's sessions live and how each is filed.
//!
//! Sessions live in a slab (`Pool::slots`), found by id through a hash map; freed slots are reused
//! from `Pool::vacant`. Every held session is in exactly one of three states, kept in step with its
//! record by one function, [`Pool::transition`]:
//! - *free*: usable and not leased; its slot is in the `free` vector, so a uniform pick is one
//!   random index, and taking it out is a swap-remove;
//! - *leased*: usable under a live lease;
//! - *retired*: terminal; it waits in the purge queue for the retention to pass.
//!
//! The counts of usable and leased sessions change only where a slot changes state, so reading them
//! costs nothing.

use rand::Rng;

use super::timers::Due;
use super::{Pool, PoolError};
use crate::session::{self, Retirement, Session, Timestamp};

/// One place of the slab.
#[derive(Debug)]
pub(super) struct Slot {
    /// Counts the sessions the slot has held, so a queued entry of an earlier one is known stale.
    pub(super) generation: u32,
    pub(super) tenant: Option<Tenant>,
}

impl Slot {
    pub(super) fn session(&self) -> Option<&Session> {
        self.tenant.as_ref().map(|tenant| &tenant.session)
    }
}

/// A session in its slot, with how it is filed.
#[derive(Debug)]
pub(super) struct Tenant {
    pub(super) session: Session,
    pub(super) state: State,
    /// Index in `Pool::free` while `state` is `Free`.
    free_pos: u32,
    /// Changed since the last [`Pool::take_changes`].
    pub(super) dirty: bool,
}

/// How a held session is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Usable and not leased: listed in the free vector.
    Free,
    /// Usable under a live lease.
    Leased,
    /// Terminal; queued for its purge.
    Retired,
}

impl State {
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

impl Pool {
    /// Puts a session in a slot and files it; its budget must already be reserved. `fresh` says it
    /// was created now (for the metrics), not restored or imported.
    pub(super) fn insert(&mut self, mut session: Session, fresh: bool, now: Timestamp) -> u32 {
        let slot = match self.vacant.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot { generation: 0, tenant: None });
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.slots[slot as usize].generation;
        let was_retired = session.retirement.is_some();
        if !was_retired {
            let at = session.expires_at;
            self.expiries.push(Due { at, slot, generation });
            self.budget.release.note(session::saturating_add(at, self.retention));
        }
        session.settle(now);
        let (retirement, lease_until) = (session.retirement, session.lease.map(|l| l.until));
        self.by_id.insert(session.id.clone(), slot);
        self.ordered.insert(session.id.clone());
        let state = State::of(&session);
        self.slots[slot as usize].tenant = Some(Tenant { session, state, free_pos: 0, dirty: false });
        self.file(slot, state);
        if fresh {
            self.metrics.created.increment(1);
        }
        self.mark_dirty(slot);
        self.queue(slot, state, retirement, !was_retired, lease_until);
        slot
    }

    /// The one place that changes a filed session: runs `change`, settles retirement, then refiles.
    pub(super) fn transition(&mut self, slot: u32, now: Timestamp, change: impl FnOnce(&mut Session)) {
        let Some(tenant) = self.slots[slot as usize].tenant.as_mut() else { return };
        let session = &mut tenant.session;
        let was_retired = session.retirement.is_some();
        let lease_before = session.lease;
        change(session);
        session.settle(now);
        let retired_now = session.retirement.filter(|_| !was_retired);
        let new_lease = session.lease.filter(|l| Some(*l) != lease_before).map(|l| l.until);
        let (old, new) = (tenant.state, State::of(session));
        if old != new {
            self.unfile(slot, old);
            self.file(slot, new);
        }
        self.mark_dirty(slot);
        self.queue(slot, new, retired_now, true, new_lease);
    }

    /// Queues what the clock will do to the slot in `state`: `retirement` (a retirement to purge
    /// later, counted in the metrics when `count`) and `lease_until` (a new lease to end).
    fn queue(
        &mut self,
        slot: u32,
        state: State,
        retirement: Option<Retirement>,
        count: bool,
        lease_until: Option<Timestamp>,
    ) {
        let generation = self.slots[slot as usize].generation;
        if let Some(until) = lease_until.filter(|_| state == State::Leased) {
            self.lease_ends.push(Due { at: until, slot, generation });
        }
        if let Some(retirement) = retirement.filter(|_| state == State::Retired) {
            if count {
                self.metrics.retirement(retirement.reason).increment(1);
            }
            let at = session::saturating_add(retirement.at, self.retention);
            self.purges.push(Due { at, slot, generation });
            self.budget.release.note(at);
        }
        self.compact_queues();
    }

    /// Files the slot's tenant as `state`: into the free vector and the counts.
    fn file(&mut self, slot: u32, state: State) {
        match state {
            State::Free => {
                let pos = self.free.len() as u32;
                self.free.push(slot);
                self.usable += 1;
                self.set_free_pos(slot, pos);
            }
            State::Leased => {
                self.leased += 1;
                self.usable += 1;
            }
            State::Retired => {}
        }
        if let Some(tenant) = self.slots[slot as usize].tenant.as_mut() {
            tenant.state = state;
        }
    }

    /// Takes the slot out of the counts and the free vector of `state`, the state it is filed in.
    fn unfile(&mut self, slot: u32, state: State) {
        match state {
            State::Free => {
                if let Some(pos) = self.slots[slot as usize].tenant.as_ref().map(|t| t.free_pos) {
                    self.free.swap_remove(pos as usize);
                    if let Some(&moved) = self.free.get(pos as usize) {
                        self.set_free_pos(moved, pos);
                    }
                }
                self.usable -= 1;
            }
            State::Leased => {
                self.leased -= 1;
                self.usable -= 1;
            }
            State::Retired => {}
        }
    }

    fn set_free_pos(&mut self, slot: u32, pos: u32) {
        if let Some(tenant) = self.slots[slot as usize].tenant.as_mut() {
            tenant.free_pos = pos;
        }
    }

    /// Removes the slot's session, whatever its state, and gives its place back.
    pub(super) fn remove_slot(&mut self, slot: u32) {
        let Some(state) = self.slots[slot as usize].tenant.as_ref().map(|t| t.state) else { return };
        self.unfile(slot, state);
        self.take_dirty(slot);
        let entry = &mut self.slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        if let Some(Tenant { session, .. }) = entry.tenant.take() {
            self.by_id.remove(&session.id);
            self.ordered.remove(&session.id);
            self.budget.release(1);
            self.changes.removed.push(session.id);
        }
        self.vacant.push(slot);
    }

    /// The slot a queued entry names, if it still holds the session the entry was queued for.
    pub(super) fn live_slot(&self, due: Due) -> Option<u32> {
        let entry = self.slots.get(due.slot as usize)?;
        (entry.generation == due.generation && entry.tenant.is_some()).then_some(due.slot)
    }

    /// The session in a slot known to hold one (a slot found by id, or just filed).
    pub(super) fn session_at(&self, slot: u32) -> &Session {
        self.slots[slot as usize].session().expect("a filed slot holds a session")
    }

    /// The slot of the session `id`.
    pub(super) fn lookup(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// The slot of the session `id` at `now`.
    pub(super) fn find(&mut self, id: &str, now: Timestamp) -> Result<u32, PoolError> {
        self.tick(now);
        self.lookup(id).ok_or_else(|| PoolError::SessionNotFound(id.to_owned()))
    }

    /// A slot chosen uniformly among those holding a free session; `None` when none is free.
    pub(super) fn pick(&mut self) -> Option<u32> {
        (!self.free.is_empty()).then(|| self.free[self.rng.random_range(0..self.free.len())])
    }

    /// Checks that every slot is filed, queued and counted as its session's state says.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let (mut free, mut leased, mut retired) = (0, 0, 0);
        for (index, entry) in self.slots.iter().enumerate() {
            let Some(tenant) = &entry.tenant else { continue };
            let session = &tenant.session;
            let due = |at| Due { at, slot: index as u32, generation: entry.generation };
            match (session.retirement, session.lease) {
                (Some(retirement), _) => {
                    assert!(self.purges.holds(due(session::saturating_add(retirement.at, self.retention))));
                }
                (None, lease) => {
                    assert!(self.expiries.holds(due(session.expires_at)), "expiry of {} lost", session.id);
                    if let Some(lease) = lease {
                        assert!(self.lease_ends.holds(due(lease.until)), "lease end of {} lost", session.id);
                    }
                }
            }
            assert_eq!(self.lookup(&session.id), Some(index as u32));
            assert_eq!(tenant.state, State::of(session));
            match tenant.state {
                State::Free => {
                    free += 1;
                    assert_eq!(self.free[tenant.free_pos as usize], index as u32);
                }
                State::Leased => leased += 1,
                State::Retired => retired += 1,
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
        let empty: Vec<u32> =
            (0..self.slots.len() as u32).filter(|&i| self.slots[i as usize].tenant.is_none()).collect();
        assert_eq!(vacant, empty, "the vacant list is exactly the slots without a session");
        self.check_changes();
    }
}
