//! The domain core: one session's health record and the rules that retire it.
//!
//! Nothing here knows HTTP, JSON or a clock: every operation takes the current time as `now`, so the
//! rules are tested with exact instants. The formulas are Crawlee's `Session` (docs/semantics.md); the
//! difference is that retirement is terminal: once [`Session::retirement`] is set, nothing changes
//! the session again.
//!
//! Usability is decided in one place, [`Session::unusable_reason`]; everything else asks it.
//!
//! The Redis store runs these rules inside Redis, so `src/store/redis/pool.lua` holds a second
//! copy of them (usability, marks, retirement, blocked status codes): change both together;
//! `tests/api/stores_agree.rs` fails when the two stores answer differently.

pub mod cookie;
pub mod jar;
pub mod settings;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use cookie::{Cookie, SameSite};
pub use settings::SessionSettings;

/// An instant on the server's UTC clock.
pub type Timestamp = DateTime<Utc>;

/// A session id. Shared, not copied: the pool keeps it in its id map, its ordered set and the
/// session itself. Ids are checked where they come in (the API layer), not here.
pub type SessionId = Arc<str>;

/// `at + delta`, or the latest representable instant when that overflows (imported documents may
/// carry timestamps near chrono's limits; no arithmetic on them may panic).
pub fn saturating_add(at: Timestamp, delta: chrono::TimeDelta) -> Timestamp {
    at.checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Seconds (fractions allowed) as a duration, to the nanosecond; callers check the range first.
pub fn secs_to_delta(secs: f64) -> chrono::TimeDelta {
    chrono::TimeDelta::nanoseconds((secs * 1e9).round() as i64)
}

/// RFC 7396 JSON merge patch of `patch` onto `target` (a session's user data): `null` deletes,
/// objects merge, anything else replaces.
pub fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::{Map, Value};
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

/// Why a session stopped being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetiredReason {
    /// Retired explicitly by a client.
    Retired,
    /// The error score reached `max_error_score`.
    Blocked,
    /// A response status in the blocked list.
    BlockedStatusCode,
    /// `expires_at` passed.
    Expired,
    /// `usage_count` reached `max_usage_count`.
    MaxUsageCount,
}

impl RetiredReason {
    /// Every reason, for metrics that want one series per reason.
    pub const ALL: [RetiredReason; 5] =
        [Self::Retired, Self::Blocked, Self::BlockedStatusCode, Self::Expired, Self::MaxUsageCount];

    /// The reason the API calls `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The name the API uses for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retired => "retired",
            Self::Blocked => "blocked",
            Self::BlockedStatusCode => "blocked_status_code",
            Self::Expired => "expired",
            Self::MaxUsageCount => "max_usage_count",
        }
    }
}

/// When and why a session retired. Once set it never changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retirement {
    /// Why it retired.
    pub reason: RetiredReason,
    /// When it retired; for expiry, `expires_at` itself.
    pub at: Timestamp,
}

/// An exclusive hold on a session by one client, until `until` or until released.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    /// The lease id the holder proves itself with.
    pub id: Uuid,
    /// When the lease ends by itself.
    pub until: Timestamp,
}

/// Errors of the domain core. The API layer maps them to HTTP; this module never sees a status code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A setting out of its range.
    #[error("{field}: {reason}")]
    InvalidSetting {
        /// The field's API name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A cookie no browser would store.
    #[error("cookie {name:?}: {reason}")]
    InvalidCookie {
        /// The cookie's name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One simulated user: identity, cookies, proxy, and the health record that decides its retirement.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id, unique within its pool.
    pub id: SessionId,
    /// When it was created.
    pub created_at: Timestamp,
    /// `created_at + max_age`, fixed at creation.
    pub expires_at: Timestamp,
    /// The limits it was created with; reconfiguring the pool does not change them.
    pub settings: Arc<SessionSettings>,
    /// Number of marks (good or bad) it has received.
    pub usage_count: u32,
    /// Crawlee's error score: +1 per bad use, minus the decrement per good use, never below 0.
    pub error_score: f64,
    /// The live lease, if a client holds it.
    pub lease: Option<Lease>,
    /// Set once, when it stops being usable.
    pub retirement: Option<Retirement>,
    /// Free-form data of the client's (login state, fingerprint ...).
    pub user_data: serde_json::Map<String, serde_json::Value>,
    /// The session's cookies.
    pub cookies: Vec<Cookie>,
    /// The sticky proxy URL, when it has one.
    pub proxy_url: Option<Box<str>>,
}

/// What a `status_code` report decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusVerdict {
    /// Whether the status counts as "this session is blocked".
    pub blocked: bool,
}

/// A response status code and the per-request lists that adjust the session's blocked list.
#[derive(Debug, Clone, Default)]
pub struct StatusReport<'a> {
    /// The status the scraper got.
    pub status_code: u16,
    /// Codes that block for this request even if the session's list does not have them.
    pub additional_blocked: &'a [u16],
    /// Codes of the session's list to ignore for this request.
    pub ignored: &'a [u16],
    /// When not blocked: mark good (200..=399) or bad (any other).
    pub mark: bool,
}

impl Session {
    /// A fresh session created at `now` with the given settings.
    pub fn new(id: SessionId, settings: Arc<SessionSettings>, now: Timestamp) -> Self {
        Self {
            id,
            created_at: now,
            expires_at: saturating_add(now, settings.max_age()),
            settings,
            usage_count: 0,
            error_score: 0.0,
            user_data: serde_json::Map::new(),
            cookies: Vec::new(),
            proxy_url: None,
            retirement: None,
            lease: None,
        }
    }

    /// `error_score >= max_error_score`.
    pub fn is_blocked(&self) -> bool {
        self.error_score >= self.settings.max_error_score
    }

    /// `now >= expires_at`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// `usage_count >= max_usage_count`.
    pub fn is_max_usage_count_reached(&self) -> bool {
        self.usage_count >= self.settings.max_usage_count
    }

    /// The one rule of usability, ignoring whether it already retired: why the record says it can
    /// no longer be used, in docs/semantics.md's order (blocked, then usage, then expiry).
    pub fn unusable_reason(&self, now: Timestamp) -> Option<RetiredReason> {
        if self.is_blocked() {
            Some(RetiredReason::Blocked)
        } else if self.is_max_usage_count_reached() {
            Some(RetiredReason::MaxUsageCount)
        } else if self.is_expired(now) {
            Some(RetiredReason::Expired)
        } else {
            None
        }
    }

    /// The retirement as a client sees it at `now`: the recorded one, or expiry at `expires_at`
    /// when the clock passed it and nobody has recorded it yet.
    pub fn retirement_at(&self, now: Timestamp) -> Option<Retirement> {
        self.retirement.or_else(|| {
            self.unusable_reason(now).map(|reason| Retirement {
                reason,
                at: if reason == RetiredReason::Expired { self.expires_at } else { now },
            })
        })
    }

    /// Not retired and nothing in the record makes it unusable.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.retirement_at(now).is_none()
    }

    /// The lease if it is still live at `now`.
    pub fn live_lease(&self, now: Timestamp) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.until > now)
    }

    /// Records retirement if the record says it is due; returns the reason when it retired now.
    /// Retirement ends any lease.
    pub fn settle(&mut self, now: Timestamp) -> Option<RetiredReason> {
        if self.retirement.is_some() {
            return None;
        }
        let retirement = self.retirement_at(now)?;
        self.retirement = Some(retirement);
        self.lease = None;
        Some(retirement.reason)
    }

    /// A good use: usage +1, error score down by the decrement (never below 0). Returns the reason
    /// when this use retired it. A retired session is left as it is.
    pub fn mark_good(&mut self, now: Timestamp) -> Option<RetiredReason> {
        if self.settle(now).is_some() || self.retirement.is_some() {
            return None;
        }
        self.usage_count = self.usage_count.saturating_add(1);
        if self.error_score > 0.0 {
            self.error_score = (self.error_score - self.settings.error_score_decrement).max(0.0);
        }
        self.settle(now)
    }

    /// A bad use: usage +1, error score +1. Returns the reason when this use retired it.
    pub fn mark_bad(&mut self, now: Timestamp) -> Option<RetiredReason> {
        if self.settle(now).is_some() || self.retirement.is_some() {
            return None;
        }
        self.usage_count = self.usage_count.saturating_add(1);
        self.error_score += 1.0;
        self.settle(now)
    }

    /// Retires it for `reason`, raising the error score to the maximum as Crawlee does.
    /// Returns the reason when it retired now (not when it had already retired).
    pub fn retire(&mut self, reason: RetiredReason, now: Timestamp) -> Option<RetiredReason> {
        if self.settle(now).is_some() || self.retirement.is_some() {
            return None;
        }
        self.error_score = self.error_score.max(self.settings.max_error_score);
        self.retirement = Some(Retirement { reason, at: now });
        self.lease = None;
        Some(reason)
    }

    /// Whether `status_code` means "blocked" for this session and request:
    /// `code in additional || code in (blocked_status_codes - ignored)`.
    pub fn is_blocked_status(&self, report: &StatusReport<'_>) -> bool {
        let code = report.status_code;
        report.additional_blocked.contains(&code)
            || (self.settings.blocked_status_codes.contains(&code) && !report.ignored.contains(&code))
    }

    /// What a crawler does after each response: retire on a blocked status, else optionally mark.
    /// Returns the verdict and the reason when the session retired in this call.
    pub fn report_status(
        &mut self,
        report: &StatusReport<'_>,
        now: Timestamp,
    ) -> (StatusVerdict, Option<RetiredReason>) {
        let blocked = self.is_blocked_status(report);
        let retired = if blocked {
            self.retire(RetiredReason::BlockedStatusCode, now)
        } else if report.mark && (200..=399).contains(&report.status_code) {
            self.mark_good(now)
        } else if report.mark {
            self.mark_bad(now)
        } else {
            self.settle(now)
        };
        (StatusVerdict { blocked }, retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let obj = |v: serde_json::Value| match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut target = obj(serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}, "k": 1}));
        merge_patch(&mut target, obj(serde_json::json!({"a": "z", "c": {"f": null}, "k": {"x": null, "y": 2}})));
        assert_eq!(serde_json::Value::Object(target), serde_json::json!({"a": "z", "c": {"d": "e"}, "k": {"y": 2}}));
    }

    fn t0() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn session_with(settings: SessionSettings) -> Session {
        Session::new(SessionId::from("s"), Arc::new(settings), t0())
    }

    fn session() -> Session {
        session_with(SessionSettings::default())
    }

    #[test]
    fn a_fresh_session_is_usable_and_expires_after_max_age() {
        let s = session();
        assert!(s.is_usable(t0()));
        assert_eq!(s.expires_at, t0() + TimeDelta::seconds(3000));
        assert!(s.is_usable(t0() + TimeDelta::seconds(2999)));
        assert!(!s.is_usable(t0() + TimeDelta::seconds(3000)));
    }

    #[test]
    fn worked_examples_of_the_error_score() {
        let mut s = session();
        s.mark_bad(t0());
        s.mark_bad(t0());
        assert_eq!((s.error_score, s.usage_count), (2.0, 2));
        s.mark_good(t0());
        s.mark_good(t0());
        assert_eq!((s.error_score, s.usage_count), (1.0, 4));
        assert_eq!(s.mark_bad(t0()), None);
        assert_eq!(s.mark_bad(t0()), Some(RetiredReason::Blocked));
        assert_eq!(s.error_score, 3.0);
        assert!(!s.is_usable(t0()));
        assert_eq!(s.mark_good(t0()), None);
        assert_eq!((s.error_score, s.usage_count), (3.0, 6));
    }

    #[test]
    fn the_last_allowed_use_retires_for_usage_whatever_the_mark() {
        let settings = SessionSettings { max_usage_count: 5, ..Default::default() };
        let mut good = session_with(settings.clone());
        good.usage_count = 4;
        assert_eq!(good.mark_good(t0()), Some(RetiredReason::MaxUsageCount));
        assert_eq!((good.usage_count, good.error_score), (5, 0.0));

        let mut bad = session_with(settings);
        bad.usage_count = 4;
        assert_eq!(bad.mark_bad(t0()), Some(RetiredReason::MaxUsageCount));
        assert_eq!((bad.usage_count, bad.error_score), (5, 1.0));
    }

    #[test]
    fn mark_good_never_takes_the_score_below_zero() {
        let mut s = session_with(SessionSettings { error_score_decrement: 0.75, ..Default::default() });
        s.mark_bad(t0());
        s.mark_good(t0());
        assert_eq!(s.error_score, 0.25);
        s.mark_good(t0());
        assert_eq!(s.error_score, 0.0);
    }

    #[test]
    fn retire_raises_the_score_keeps_usage_and_is_terminal() {
        let mut s = session();
        s.mark_good(t0());
        assert_eq!(s.retire(RetiredReason::Retired, t0()), Some(RetiredReason::Retired));
        assert_eq!((s.error_score, s.usage_count), (3.0, 1));
        assert_eq!(s.retire(RetiredReason::Retired, t0()), None);
        assert_eq!(s.mark_bad(t0()), None);
        assert_eq!((s.error_score, s.usage_count), (3.0, 1));
        assert_eq!(s.retirement.unwrap().at, t0());
    }

    #[test]
    fn expiry_is_seen_at_expires_at_and_recorded_with_that_time() {
        let mut s = session_with(SessionSettings { max_age_secs: 1.0, ..Default::default() });
        let later = t0() + TimeDelta::seconds(5);
        let seen = s.retirement_at(later).unwrap();
        assert_eq!((seen.reason, seen.at), (RetiredReason::Expired, s.expires_at));
        assert_eq!(s.mark_good(later), None, "an expired session takes no more marks");
        assert_eq!(s.usage_count, 0);
        assert_eq!(s.retirement.unwrap().at, t0() + TimeDelta::seconds(1));
    }

    #[test]
    fn status_reports_follow_the_blocked_formula() {
        let mut s = session();
        let report = |code, mark| StatusReport { status_code: code, mark, ..Default::default() };
        assert!(!s.report_status(&report(200, false), t0()).0.blocked);
        assert_eq!(s.usage_count, 0);
        s.report_status(&report(302, true), t0());
        assert_eq!((s.usage_count, s.error_score), (1, 0.0));
        s.report_status(&report(500, true), t0());
        assert_eq!((s.usage_count, s.error_score), (2, 1.0));

        let ignored = StatusReport { status_code: 403, ignored: &[403], ..Default::default() };
        assert!(!s.report_status(&ignored, t0()).0.blocked);
        assert!(s.is_usable(t0()));

        let both = StatusReport { status_code: 500, additional_blocked: &[500], ignored: &[500], mark: false };
        let (verdict, retired) = s.clone().report_status(&both, t0());
        assert!(verdict.blocked);
        assert_eq!(retired, Some(RetiredReason::BlockedStatusCode));

        let (verdict, retired) = s.report_status(&report(429, true), t0());
        assert!(verdict.blocked);
        assert_eq!(retired, Some(RetiredReason::BlockedStatusCode));
        assert_eq!((s.error_score, s.usage_count), (3.0, 2));
    }

    #[test]
    fn an_empty_blocked_list_blocks_nothing() {
        let mut s =
            session_with(SessionSettings { blocked_status_codes: Arc::from([].as_slice()), ..Default::default() });
        let (verdict, _) = s.report_status(&StatusReport { status_code: 403, ..Default::default() }, t0());
        assert!(!verdict.blocked);
        assert!(s.is_usable(t0()));
    }

    #[test]
    fn retirement_ends_the_lease() {
        let mut s = session();
        s.lease = Some(Lease { id: Uuid::nil(), until: t0() + TimeDelta::seconds(30) });
        s.retire(RetiredReason::Retired, t0());
        assert!(s.lease.is_none());
    }
}
