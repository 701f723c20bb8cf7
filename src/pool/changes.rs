//! Change tracking: what changed in a pool since the last persist cycle, so a cycle costs
//! O(changes), not O(sessions).

use std::ops::Bound;

use super::Pool;
use crate::session::{Session, SessionId};

/// What changed since the last [`Pool::take_changes`].
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Slots marked dirty, in the order they were; a slot taken by id order, or emptied, stays
    /// listed until the list is compacted, so `dirty_count` is the true count.
    dirty: Vec<u32>,
    dirty_count: usize,
    pub(super) removed: Vec<SessionId>,
    pub(super) config: bool,
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

impl Changes {
    /// The changes of a new pool: its configuration.
    pub(super) fn new() -> Self {
        Self { config: true, ..Self::default() }
    }
}

impl ChangeSet<'_> {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.config_changed && self.removed.is_empty() && self.upserted.is_empty()
    }
}

impl Pool {
    /// Makes the next [`Pool::take_changes`] report the configuration as changed.
    pub fn mark_config_changed(&mut self) {
        self.changes.config = true;
    }

    /// Sessions changed or removed since the previous [`Pool::take_changes`].
    pub fn pending_changes(&self) -> usize {
        self.changes.dirty_count + self.changes.removed.len()
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
                if self.take_dirty(slot) {
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
            let start = after.map_or(Bound::Unbounded, |id| Bound::Excluded(&**id));
            // Visit a bounded number of ids per call, dirty or not, so the lock is held briefly.
            let visited: Vec<SessionId> =
                self.ordered.range::<str, _>((start, Bound::Unbounded)).take(room.max(1) * 8).cloned().collect();
            next = None;
            for id in visited {
                if slots.len() == room {
                    break;
                }
                if let Some(slot) = self.lookup(&id) {
                    if self.take_dirty(slot) {
                        slots.push(slot);
                    }
                }
                next = Some(id);
            }
            if next.as_ref().is_some_and(|last| self.ordered.last() == Some(last)) {
                next = None;
            }
            if next.is_none() {
                let slots = &self.slots;
                self.changes.dirty.retain(|&slot| slots[slot as usize].tenant.as_ref().is_some_and(|t| t.dirty));
            }
        }
        (self.change_set(config_changed, removed, slots), next)
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

    fn change_set(&self, config_changed: bool, removed: Vec<SessionId>, slots: Vec<u32>) -> ChangeSet<'_> {
        ChangeSet {
            config_changed,
            removed,
            upserted: slots.into_iter().map(|slot| self.session_at(slot)).collect(),
            more: self.pending_changes() > 0,
        }
    }

    /// Notes that the slot's session changed.
    pub(super) fn mark_dirty(&mut self, slot: u32) {
        if let Some(tenant) = self.slots[slot as usize].tenant.as_mut() {
            if !tenant.dirty {
                tenant.dirty = true;
                self.changes.dirty.push(slot);
                self.changes.dirty_count += 1;
            }
        }
    }

    /// Clears the slot's dirty flag; whether it was set (an empty slot never is).
    pub(super) fn take_dirty(&mut self, slot: u32) -> bool {
        let was = self.slots[slot as usize].tenant.as_mut().is_some_and(|t| std::mem::take(&mut t.dirty));
        if was {
            self.changes.dirty_count -= 1;
        }
        was
    }

    /// Panics unless `dirty_count` is the number of dirty sessions and each of them is listed, so
    /// that its change is written by a later take.
    #[cfg(test)]
    pub(super) fn check_changes(&self) {
        let listed: std::collections::HashSet<u32> = self.changes.dirty.iter().copied().collect();
        let mut dirty = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.tenant.as_ref().is_some_and(|tenant| tenant.dirty) {
                dirty += 1;
                assert!(
                    listed.contains(&(index as u32)),
                    "slot {index} is dirty but not listed: its change would be lost"
                );
            }
        }
        assert_eq!(self.changes.dirty_count, dirty, "dirty_count is the number of dirty sessions");
    }
}
