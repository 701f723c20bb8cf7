//! A pool's metric handles.

use metrics::{Counter, Histogram};

use crate::metric_names as names;
use crate::session::RetiredReason;

/// Metric handles registered once per pool, so a call does no label lookup.
#[derive(Debug)]
pub(super) struct PoolMetrics {
    pub(super) acquired: Counter,
    pub(super) exhausted: Counter,
    pub(super) good: Counter,
    pub(super) bad: Counter,
    pub(super) created: Counter,
    retired: [Counter; 5],
    pub(super) acquire_seconds: Histogram,
}

impl PoolMetrics {
    pub(super) fn new(pool: &str) -> Self {
        let pool = pool.to_owned();
        let acquires =
            |result: &'static str| metrics::counter!(names::ACQUIRES, "pool" => pool.clone(), "result" => result);
        let marks =
            |outcome: &'static str| metrics::counter!(names::MARKS, "pool" => pool.clone(), "outcome" => outcome);
        Self {
            acquired: acquires("ok"),
            exhausted: acquires("exhausted"),
            good: marks("good"),
            bad: marks("bad"),
            created: metrics::counter!(names::SESSIONS_CREATED, "pool" => pool.clone()),
            acquire_seconds: metrics::histogram!(names::ACQUIRE_DURATION, "pool" => pool.clone()),
            retired: RetiredReason::ALL.map(
                |reason| metrics::counter!(names::RETIREMENTS, "pool" => pool.clone(), "reason" => reason.as_str()),
            ),
        }
    }

    pub(super) fn retirement(&self, reason: RetiredReason) -> &Counter {
        let index = RetiredReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.retired[index]
    }
}
