//! The slots of recently handed-out or looked-up sessions, by a hash of their id: the fast path of
//! finding the session a mark, a release or a read names. Acquire fills it, and so does a lookup
//! that found its session in the id map.
//!
//! A scraper reports on a session soon after it acquired it. In a large pool the id map is far
//! bigger than the CPU caches, so looking the id up there costs trips to DRAM; this direct-mapped
//! table of [`SIZE`] entries stays in L2. An entry is only a hint: it is trusted after the slot's
//! generation and the session's id are compared, and a miss (or an attacker's collision) falls back
//! to the id map, so the table can never make a lookup answer differently.

use std::cell::Cell;
use std::hash::BuildHasher;

/// Entries in the table (a power of two).
const SIZE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    slot: u32,
    generation: u32,
}

/// Hints from id hash to slot.
#[derive(Debug)]
pub(super) struct Recent {
    hasher: foldhash::fast::RandomState,
    /// Cells, so a lookup through `&Pool` can remember what it found.
    entries: Box<[Cell<Entry>]>,
}

impl Recent {
    pub(super) fn new() -> Self {
        let empty = Entry { hash: 0, slot: u32::MAX, generation: 0 };
        Self {
            hasher: foldhash::fast::RandomState::default(),
            entries: vec![Cell::new(empty); SIZE].into_boxed_slice(),
        }
    }

    /// The hash the table files `id` under.
    pub(super) fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Remembers that the id hashing to `hash` lives in `slot` at `generation`.
    pub(super) fn remember(&self, hash: u64, slot: u32, generation: u32) {
        self.entries[hash as usize % SIZE].set(Entry { hash, slot, generation });
    }

    /// The slot and generation last remembered for `hash`, if any: a candidate to verify.
    pub(super) fn candidate(&self, hash: u64) -> Option<(u32, u32)> {
        let entry = self.entries[hash as usize % SIZE].get();
        (entry.hash == hash && entry.slot != u32::MAX).then_some((entry.slot, entry.generation))
    }
}
