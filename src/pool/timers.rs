//! What the clock does to a pool without a call: lease ends, expiries and purges, each kept in a
//! min-heap keyed by time, so applying the clock costs only what is due.
//!
//! Entries carry the slot's generation, so a purged and reused slot never acts on an old entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Pool;
use crate::session::{self, Timestamp};

/// A time-keyed entry of one of the pool's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    pub(super) at: Timestamp,
    pub(super) slot: u32,
    pub(super) generation: u32,
}

/// A min-heap of [`Due`] entries. Entries that went stale (a lease released early, a session deleted
/// before its expiry) are not searched for: they are skipped when popped, and dropped all at once
/// when the heap has doubled since it was last compacted. A queue so holds at most about twice the
/// live entries it had at its last compaction (stale ones also leave when their time comes), and
/// every operation stays amortized O(log n).
#[derive(Debug, Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Reverse<Due>>,
    /// The length above which the next push compacts.
    compact_above: usize,
}

/// Below this many entries a queue is never compacted (a few in tests, so the property test
/// compacts often and checks that no live entry is ever dropped).
pub(super) const QUEUE_COMPACT_MIN: usize = if cfg!(test) { 8 } else { 1024 };

impl Queue {
    pub(super) fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// When the earliest entry is due.
    pub(super) fn next_at(&self) -> Option<Timestamp> {
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
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether an entry equal to `due` is queued.
    #[cfg(test)]
    pub(super) fn holds(&self, due: Due) -> bool {
        self.heap.iter().any(|Reverse(d)| *d == due)
    }
}

impl Pool {
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

    /// The earliest time this pool may purge a session: its next purge, or its next expiry plus the
    /// retention (either may be a stale entry, which only makes the time early).
    pub(super) fn next_release(&self) -> Option<Timestamp> {
        let purge = self.purges.next_at();
        let expiry = self.expiries.next_at().map(|at| session::saturating_add(at, self.retention));
        purge.into_iter().chain(expiry).min()
    }

    /// Drops the stale entries of any queue that has doubled since its last compaction.
    pub(super) fn compact_queues(&mut self) {
        let slots = &self.slots;
        let session = |due: &Due| {
            slots.get(due.slot as usize).filter(|s| s.generation == due.generation).and_then(|s| s.session())
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
}
