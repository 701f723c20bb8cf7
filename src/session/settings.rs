//! Per-session limits: how long a session lives, how often it may be used, and how many errors it
//! may collect before the target site is assumed to have blocked it.
//!
//! A pool holds one `Arc<SessionSettings>` and every session it creates shares it, so a million
//! sessions cost one copy of the blocked-status list, not a million.

use std::sync::Arc;

use super::Error;

/// Crawlee's default maximum age: 50 minutes.
pub const DEFAULT_MAX_AGE_SECS: f64 = 3000.0;
/// Crawlee's default number of uses before a session retires.
pub const DEFAULT_MAX_USAGE_COUNT: u32 = 50;
/// Crawlee's default error score at which a session counts as blocked.
pub const DEFAULT_MAX_ERROR_SCORE: f64 = 3.0;
/// Crawlee's default amount a good use takes off the error score.
pub const DEFAULT_ERROR_SCORE_DECREMENT: f64 = 0.5;
/// Crawlee's default status codes that mean "this session is blocked".
pub const DEFAULT_BLOCKED_STATUS_CODES: [u16; 3] = [401, 403, 429];
/// The longest `max_age_secs` accepted: ten Julian years.
pub const MAX_AGE_LIMIT_SECS: f64 = 10.0 * 365.25 * 86_400.0;

/// The limits that decide when a session stops being usable.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Seconds from creation until the session expires; fractions allowed.
    pub max_age_secs: f64,
    /// Uses (marks) after which the session retires.
    pub max_usage_count: u32,
    /// Error score at which the session counts as blocked.
    pub max_error_score: f64,
    /// What a good use takes off the error score.
    pub error_score_decrement: f64,
    /// Status codes that retire the session at once; empty means none does.
    pub blocked_status_codes: Arc<[u16]>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            max_usage_count: DEFAULT_MAX_USAGE_COUNT,
            max_error_score: DEFAULT_MAX_ERROR_SCORE,
            error_score_decrement: DEFAULT_ERROR_SCORE_DECREMENT,
            blocked_status_codes: Arc::from(DEFAULT_BLOCKED_STATUS_CODES.as_slice()),
        }
    }
}

impl SessionSettings {
    /// Checks every range SEMANTICS.md and API.md set.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.max_age_secs > 0.0 && self.max_age_secs <= MAX_AGE_LIMIT_SECS) {
            return Err(Error::InvalidSetting {
                field: "max_age_secs",
                reason: format!("must be > 0 and at most {MAX_AGE_LIMIT_SECS} (ten years)"),
            });
        }
        if self.max_usage_count < 1 {
            return Err(Error::InvalidSetting { field: "max_usage_count", reason: "must be at least 1".into() });
        }
        if !(self.max_error_score.is_finite() && self.max_error_score > 0.0) {
            return Err(Error::InvalidSetting {
                field: "max_error_score",
                reason: "must be a finite number > 0".into(),
            });
        }
        if !(self.error_score_decrement.is_finite() && self.error_score_decrement >= 0.0) {
            return Err(Error::InvalidSetting {
                field: "error_score_decrement",
                reason: "must be a finite number >= 0".into(),
            });
        }
        if let Some(code) = self.blocked_status_codes.iter().find(|c| !is_status_code(**c)) {
            return Err(Error::InvalidSetting {
                field: "blocked_status_codes",
                reason: format!("{code} is not a status code in 100..=599"),
            });
        }
        Ok(())
    }

    /// The session lifetime as a duration (nanosecond precision).
    pub fn max_age(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::nanoseconds((self.max_age_secs * 1e9).round() as i64)
    }
}

/// Whether `code` is an HTTP status code this API accepts (100..=599).
pub fn is_status_code(code: u16) -> bool {
    (100..=599).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_crawlees_and_valid() {
        let s = SessionSettings::default();
        assert_eq!(s.max_age_secs, 3000.0);
        assert_eq!(s.max_usage_count, 50);
        assert_eq!(s.max_error_score, 3.0);
        assert_eq!(s.error_score_decrement, 0.5);
        assert_eq!(&*s.blocked_status_codes, &[401, 403, 429]);
        s.validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases: Vec<(SessionSettings, &str)> = vec![
            (SessionSettings { max_age_secs: 0.0, ..Default::default() }, "max_age_secs"),
            (SessionSettings { max_age_secs: 4e8, ..Default::default() }, "max_age_secs"),
            (SessionSettings { max_usage_count: 0, ..Default::default() }, "max_usage_count"),
            (SessionSettings { max_error_score: 0.0, ..Default::default() }, "max_error_score"),
            (SessionSettings { error_score_decrement: -0.5, ..Default::default() }, "error_score_decrement"),
            (
                SessionSettings { blocked_status_codes: Arc::from([42u16].as_slice()), ..Default::default() },
                "blocked_status_codes",
            ),
        ];
        for (settings, field) in cases {
            match settings.validate() {
                Err(Error::InvalidSetting { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn max_age_keeps_fractions() {
        let s = SessionSettings { max_age_secs: 0.25, ..Default::default() };
        assert_eq!(s.max_age(), chrono::TimeDelta::milliseconds(250));
    }
}
