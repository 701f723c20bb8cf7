//! Per-session limits: how long a session lives, how often it may be used, and how many errors it
//! may collect before the target site is assumed to have blocked it.
//!
//! A pool holds one `Arc<SessionSettings>` and every session it creates shares it, so a million
//! sessions cost one copy of the blocked-status list, not a million.
//!
//! [`SettingsPatch`] is the one input shape of these settings (a pool's `session`, a session create,
//! every import form), and `SessionSettings`' `Serialize` the one output shape.

use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use super::Error;
use crate::json::strict::Fields;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[serde(serialize_with = "codes")]
    pub blocked_status_codes: Arc<[u16]>,
}

/// The list as a JSON array (serde writes an `Arc` only with its `rc` feature).
fn codes<S: Serializer>(codes: &Arc<[u16]>, s: S) -> Result<S::Ok, S::Error> {
    codes[..].serialize(s)
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
    /// Checks every range docs/semantics.md and openapi.yaml set.
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
        super::secs_to_delta(self.max_age_secs)
    }
}

/// Session settings as an input gives them: each field optional, a missing one taken from a base
/// (the server's defaults, or the pool's settings for a session). Unknown fields are refused; an
/// import, which ignores them, reads only [`Fields::FIELDS`] of its object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// `max_age_secs`, when given.
    pub max_age_secs: Option<f64>,
    /// `max_usage_count`, when given.
    #[serde(default, deserialize_with = "crate::json::int::opt")]
    pub max_usage_count: Option<u32>,
    /// `max_error_score`, when given.
    pub max_error_score: Option<f64>,
    /// `error_score_decrement`, when given.
    pub error_score_decrement: Option<f64>,
    /// `blocked_status_codes`, when given.
    #[serde(default, deserialize_with = "crate::json::int::opt_list")]
    pub blocked_status_codes: Option<Vec<u16>>,
}

impl Fields for SettingsPatch {
    const FIELDS: &'static [&'static str] =
        &["max_age_secs", "max_usage_count", "max_error_score", "error_score_decrement", "blocked_status_codes"];
}

impl SettingsPatch {
    /// `base` with the given fields replaced, validated.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the first field out of range.
    pub fn resolve(&self, base: &SessionSettings) -> Result<SessionSettings, Error> {
        let settings = SessionSettings {
            max_age_secs: self.max_age_secs.unwrap_or(base.max_age_secs),
            max_usage_count: self.max_usage_count.unwrap_or(base.max_usage_count),
            max_error_score: self.max_error_score.unwrap_or(base.max_error_score),
            error_score_decrement: self.error_score_decrement.unwrap_or(base.error_score_decrement),
            blocked_status_codes: match &self.blocked_status_codes {
                Some(codes) => Arc::from(codes.as_slice()),
                None => Arc::clone(&base.blocked_status_codes),
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the given fields without a base. Each range is checked on its own, so this finds every
    /// bad field that [`SettingsPatch::resolve`] would, whatever valid base it is later applied to.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        self.resolve(&SessionSettings::default()).map(drop)
    }

    /// Whether no field is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
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
    fn a_patch_replaces_what_it_gives_and_is_validated() {
        let base = SessionSettings { max_usage_count: 7, ..Default::default() };
        let patch =
            SettingsPatch { max_age_secs: Some(60.0), blocked_status_codes: Some(vec![]), ..Default::default() };
        let settings = patch.resolve(&base).unwrap();
        assert_eq!((settings.max_age_secs, settings.max_usage_count), (60.0, 7));
        assert!(settings.blocked_status_codes.is_empty());
        assert!(SettingsPatch::default().is_empty() && !patch.is_empty());
        let bad = SettingsPatch { max_usage_count: Some(0), ..Default::default() };
        assert!(matches!(bad.validate(), Err(Error::InvalidSetting { field: "max_usage_count", .. })));
    }

    #[test]
    fn the_field_list_is_the_structs() {
        assert_eq!(crate::json::strict::serde_fields::<SettingsPatch>(), SettingsPatch::FIELDS);
    }

    #[test]
    fn input_and_output_use_the_same_names() {
        let json = serde_json::to_value(SessionSettings::default()).unwrap();
        let names: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = SettingsPatch::FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(names, fields, "serde_json's map is sorted by key");
        assert_eq!(json["blocked_status_codes"], serde_json::json!([401, 403, 429]));
        let back: SettingsPatch = serde_json::from_value(json).unwrap();
        assert_eq!(back.resolve(&SessionSettings::default()).unwrap(), SessionSettings::default());
    }

    #[test]
    fn max_age_keeps_fractions() {
        let s = SessionSettings { max_age_secs: 0.25, ..Default::default() };
        assert_eq!(s.max_age(), chrono::TimeDelta::milliseconds(250));
    }
}
