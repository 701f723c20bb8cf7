//! Uniform picks drawn a few calls ahead, so the memory a pick will touch is already on its way
//! when the pick is made.
//!
//! In a pool of a million sessions a uniformly random pick lands on cold memory: the slot (and,
//! when the pick draws from the free vector, the vector's entry) costs a trip to DRAM. None of that
//! depends on the pool's state, only on a random number, so the pool draws its random words
//! [`AHEAD`] picks early and, on every pick, asks the memory system for what the coming picks will
//! need ([`Pool::warm_ahead`](super::Pool)). The pick itself is made from the word and the pool as
//! it is at that moment, so a prefetch that turns out wrong costs a miss, never a wrong answer, and
//! the pick stays exactly uniform.

use rand::rngs::SmallRng;
use rand::RngCore;

/// How many picks ahead the words are drawn.
pub(super) const AHEAD: usize = 24;

/// The stages, in picks before the pick. A pick that draws over the slots prefetches its slot at
/// `FAR`; one that draws from the free vector prefetches its free-vector entry at `FAR` and the slot
/// that entry names at `NEAR`, eight picks (a few hundred ns in a tight loop) later, when the entry
/// has arrived. In a pool of 1M, one binary reading the distance at run time gave the core bench's
/// cycle (acquire + mark_good) the same cost within 1-2 ns for a slot prefetched 7, 15, 23 or 31
/// picks ahead, in each of three copies of it: as far ahead as this, the slot is in time. (Separate
/// builds seemed to say more, but byte-identical copies of one binary differ by up to 7 ns at 1M,
/// with where their file sits in memory: compare within one binary.)
pub(super) const FAR: usize = AHEAD - 1;
pub(super) const NEAR: usize = 15;

/// Random words for the next [`AHEAD`] picks.
#[derive(Debug)]
pub(super) struct Picks {
    rng: SmallRng,
    words: [u64; AHEAD],
    next: usize,
    /// Words taken since the last [`Picks::take_fresh`].
    fresh: usize,
}

impl Picks {
    pub(super) fn new(mut rng: SmallRng) -> Self {
        let words = std::array::from_fn(|_| rng.next_u64());
        Self { rng, words, next: 0, fresh: 0 }
    }

    /// The word of the pick `distance` picks after the next one (0 is the next pick).
    pub(super) fn peek(&self, distance: usize) -> u64 {
        self.words[(self.next + distance) % AHEAD]
    }

    /// A position in `0..len`, exactly uniform, from the next word; `len` must not be 0.
    ///
    /// Lemire's multiply-shift with rejection: the high half of `word * len` is the position, and
    /// the few words whose low half falls under `2^64 mod len` are rejected, which removes the bias.
    pub(super) fn index(&mut self, len: usize) -> usize {
        debug_assert!(len > 0);
        let len = len as u64;
        let mut word = self.take();
        loop {
            let product = u128::from(word) * u128::from(len);
            let low = product as u64;
            if low >= len || low >= len.wrapping_neg() % len {
                return (product >> 64) as usize;
            }
            word = self.rng.next_u64();
        }
    }

    fn take(&mut self) -> u64 {
        let word = std::mem::replace(&mut self.words[self.next], self.rng.next_u64());
        self.next = (self.next + 1) % AHEAD;
        self.fresh += 1;
        word
    }

    /// How many words were taken since the last call (at most [`AHEAD`]): each one moved a new word
    /// into the window, and the words that reached a stage's distance since then are those between
    /// that distance and as many before it. A pick that draws again takes more than one.
    pub(super) fn take_fresh(&mut self) -> usize {
        std::mem::take(&mut self.fresh).min(AHEAD)
    }
}

/// Where the word would land in `0..len` (the rejection aside): what to prefetch for it.
pub(super) fn position(word: u64, len: usize) -> usize {
    ((u128::from(word) * len as u128) >> 64) as usize
}

/// Keep the line in every cache level.
#[cfg(target_arch = "x86_64")]
pub(super) const T0: i32 = std::arch::x86_64::_MM_HINT_T0;
/// The line is used soon and then not for a long time: keep it out of the way of the rest.
#[cfg(target_arch = "x86_64")]
pub(super) const NTA: i32 = std::arch::x86_64::_MM_HINT_NTA;
#[cfg(not(target_arch = "x86_64"))]
pub(super) const T0: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
pub(super) const NTA: i32 = 0;

/// Asks the CPU to bring the cache line holding `at` closer, as `HINT` ([`T0`] or [`NTA`]) says.
/// A hint: it never faults and never changes what the program computes; a no-op off x86_64.
#[inline(always)]
pub(super) fn prefetch<const HINT: i32, T: ?Sized>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCH performs no access the program can observe; it does not fault even on an
    // invalid address, and every address passed here points into a live allocation anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn positions_are_uniform() {
        let mut picks = Picks::new(SmallRng::seed_from_u64(1));
        let mut seen = [0u32; 7];
        for _ in 0..70_000 {
            seen[picks.index(7)] += 1;
        }
        for count in seen {
            assert!((9_000..11_000).contains(&count), "{seen:?}");
        }
    }

    #[test]
    fn a_pick_uses_the_word_peeked_for_it() {
        let mut picks = Picks::new(SmallRng::seed_from_u64(2));
        let ahead = picks.peek(3);
        for _ in 0..3 {
            picks.index(1000);
        }
        assert_eq!(picks.peek(0), ahead);
        assert_eq!(picks.index(1000), position(ahead, 1000));
    }

    #[test]
    fn every_position_of_a_tiny_range_comes_up() {
        let mut picks = Picks::new(SmallRng::seed_from_u64(3));
        assert!((0..100).all(|_| picks.index(1) == 0));
        let mut seen = [false; 3];
        (0..100).for_each(|_| seen[picks.index(3)] = true);
        assert_eq!(seen, [true; 3]);
    }
}
