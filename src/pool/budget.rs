//! The count of sessions held by all pools together, against `--max-sessions`, and the earliest
//! time at which some pool may give places back.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use crate::session::Timestamp;

/// The count of sessions held by all pools together, against `--max-sessions`.
///
/// A pool purges its retired sessions when its clock is applied: on its next call, or on the
/// background sweep. Until then they still count here, so a pool short of places would be refused
/// for sessions another pool has already let go. The budget therefore also keeps the earliest time
/// at which any pool may give places back (`ReleaseTime`): a call that finds too few places left
/// and that time passed has the registry apply the clock to every pool first
/// ([`Registry::make_room`](super::Registry::make_room)).
#[derive(Debug)]
pub struct SessionBudget {
    held: AtomicUsize,
    max: usize,
    pub(super) release: ReleaseTime,
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

    /// Reserves `n` sessions if all of them fit under the limit, else none; whether it did.
    pub fn try_reserve_all(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (held + n <= self.max).then_some(held + n))
            .is_ok()
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
/// the retention when it queues them; a walk over every pool
/// ([`Registry::tick_all`](super::Registry::tick_all)) then puts in
/// place the earliest release it found, since the ones due before are done.
///
/// Putting a walk's finding in place is what could make the time late: a pool the walk has already
/// visited may queue a purge before the walk ends. So while a walk runs, notes also go to
/// `pending` (reset when it starts), and the walk's finding is lowered to it. Both change under one
/// lock; outside a walk, a note no earlier than the time in place changes nothing and takes no lock,
/// which is the common case (sessions retire after the earliest one known).
#[derive(Debug)]
pub(super) struct ReleaseTime {
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
    pub(super) fn note(&self, at: Timestamp) {
        let micros = at.timestamp_micros();
        if self.walking.load(Ordering::SeqCst) || micros < self.at.load(Ordering::SeqCst) {
            let mut times = self.times();
            times.at = times.at.min(micros);
            times.pending = times.pending.min(micros);
            self.at.store(times.at, Ordering::SeqCst);
        }
    }

    /// Whether some pool may have sessions to purge at `now`.
    pub(super) fn due(&self, now: Timestamp) -> bool {
        self.at.load(Ordering::SeqCst) <= now.timestamp_micros()
    }

    /// Starts a walk (one at a time: the caller holds [`Registry`](super::Registry)'s `walking`).
    pub(super) fn begin_walk(&self) {
        self.times().pending = i64::MAX;
        self.walking.store(true, Ordering::SeqCst);
    }

    /// Ends a walk that found `earliest` as the next release of every pool it visited.
    pub(super) fn end_walk(&self, earliest: Option<Timestamp>) {
        let earliest = earliest.map_or(i64::MAX, |at| at.timestamp_micros());
        let mut times = self.times();
        times.at = earliest.min(times.pending);
        self.at.store(times.at, Ordering::SeqCst);
        self.walking.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::pool::tests::{secs, t0};

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
}
