//! Conversions between the domain ([`Session`], [`PoolConfig`]) and the documents that move pools in
//! and out of the service: its own export form, Crawlee for Python's persisted `SessionPoolModel`
//! and Crawlee for JavaScript's `SessionPool.getState()`.
//!
//! Pure functions over `serde_json` values and domain types; no HTTP, no clock (time comes in as
//! `now`). The API layer (`api::transfer`) calls [`parse_import`] on the body, checks the session
//! ids with the API's rule and hands the [`ImportedSession`]s to the pool
//! (`Registry::lock_for_import`, `Pool::import`), which turns each into a [`Session`]; for export it
//! calls [`crawlee_pool_state`] (the own form is the API's views).
//!
//! # How the forms map
//! | this service | own form | Crawlee for Python | Crawlee for JavaScript |
//! | --- | --- | --- | --- |
//! | id | `id` | `id` | `id` |
//! | created_at | `created_at` | `createdAt` | `createdAt` |
//! | max_age_secs | `max_age_secs` | `maxAge` (ISO 8601 duration) | `expiresAt - createdAt` |
//! | usage_count, error_score | snake_case | `usageCount`, `errorScore` | `usageCount`, `errorScore` |
//! | max_usage_count, max_error_score, error_score_decrement | snake_case | camelCase | camelCase |
//! | blocked_status_codes | `blocked_status_codes` | `blockedStatusCodes` | (none: the pool's) |
//! | user_data | `user_data` | `userData` | `userData` |
//! | cookies | Cookie objects | the same shape | `cookieJar.cookies`, tough-cookie's form |
//! | proxy_url | `proxy_url` | (none) | (none) |
//! | retirement | `retired`, `retired_reason`, `retired_at` | from the record | from the record |
//!
//! A setting a document leaves out comes from the pool the session lands in. A session whose record
//! makes it unusable (blocked, worn out, expired), or that the own form marks retired, is imported
//! retired: reason from the document or else from the record, time from the document or else `now`.
//!
//! tough-cookie cookies: `hostOnly: true` with domain `example.com` is the host-only `example.com`,
//! otherwise `.example.com` (the domain and its subdomains); `expires` (ISO 8601, or `"Infinity"`)
//! and `maxAge` (seconds from `creation`, which wins, as in tough-cookie) become Unix seconds;
//! `sameSite` `lax` / `strict` / `none` become `Lax` / `Strict` / `None`.
//!
//! One file per form: `own` (this service's export), `python` (Crawlee for Python's persisted
//! state, which is also the Crawlee export), `js` (Crawlee for JavaScript's).

mod js;
mod own;
mod python;

use js::JsSessionDoc;
use own::OwnSessionDoc;
use python::PythonSessionDoc;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Datelike;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::json::int::{self as json_int, Int};
use crate::json::strict::{field_of, split_off, Fields};
use crate::pool::{validate_proxy_url, PoolConfig};
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, RetiredReason, Retirement, Session, SessionId, SessionSettings, Timestamp};

pub use python::{crawlee_pool_state, format_iso_duration, parse_iso_duration, CrawleePoolState, CrawleeSessionState};

/// A document that cannot be imported, with a message naming the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocumentError(pub String);

impl DocumentError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Which system wrote an import document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// This service's `GET /v1/pools/{pool}/export`: `{"config", "sessions"}`.
    Own,
    /// Crawlee for Python's persisted `SessionPoolModel` (`maxPoolSize`, camelCase sessions).
    CrawleePython,
    /// Crawlee for JavaScript's `SessionPool.getState()` (sessions with `cookieJar`, `expiresAt`).
    CrawleeJs,
}

impl ImportFormat {
    /// A short name, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Own => "session-pool",
            Self::CrawleePython => "crawlee-python",
            Self::CrawleeJs => "crawlee-js",
        }
    }
}

/// A retirement an own-form document records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordedRetirement {
    /// `retired_reason`, when given.
    pub reason: Option<RetiredReason>,
    /// `retired_at`, when given.
    pub at: Option<Timestamp>,
}

/// One session of an import document: types, ranges and cookies checked, not yet placed in a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedSession {
    /// The id as the document gives it (the API layer checks it against its id rule).
    pub id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its settings; the missing ones come from the pool it lands in.
    pub settings: SettingsPatch,
    /// Uses so far.
    pub usage_count: u32,
    /// Error score, finite and >= 0.
    pub error_score: f64,
    /// Free-form data.
    pub user_data: Map<String, Value>,
    /// Cookies, validated, in the API's shape (openapi.yaml).
    pub cookies: Vec<Cookie>,
    /// The sticky proxy (own form only).
    pub proxy_url: Option<String>,
    /// The retirement the document records (own form only).
    pub retirement: Option<RecordedRetirement>,
}

impl ImportedSession {
    /// The domain session with `settings` (resolved from [`ImportedSession::settings`] over the
    /// pool's), retired when the document says so or its record makes it unusable at `now`: with
    /// the document's reason or else the record's, at the document's time or else `now`. No lease.
    pub fn into_session(self, settings: Arc<SessionSettings>, now: Timestamp) -> Session {
        let mut session = Session::new(SessionId::from(self.id), settings, self.created_at);
        session.usage_count = self.usage_count;
        session.error_score = self.error_score;
        session.user_data = self.user_data;
        session.cookies = self.cookies;
        session.proxy_url = self.proxy_url.map(String::into_boxed_str);
        let from_record = session.unusable_reason(now);
        session.retirement = match self.retirement {
            Some(recorded) => Some(Retirement {
                reason: recorded.reason.or(from_record).unwrap_or(RetiredReason::Retired),
                at: recorded.at.unwrap_or(now),
            }),
            None => from_record.map(|reason| Retirement { reason, at: now }),
        };
        session
    }
}

/// An import document, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportDocument {
    /// Which system wrote it.
    pub format: ImportFormat,
    /// The configuration of the pool, for when the import creates it: the document's (own form),
    /// its `maxPoolSize` over the server's defaults (Crawlee for Python), or the defaults (JS).
    pub pool_config: PoolConfig,
    /// Its sessions, in document order, ids distinct.
    pub sessions: Vec<ImportedSession>,
}

/// Recognises and checks an import document: its form, the pool configuration it implies, and
/// every session. Fields this service does not use are ignored; everything it uses must be of the
/// right type and in range.
///
/// # Errors
/// [`DocumentError`] naming the first problem: a body of none of the three forms, a field of the
/// wrong type, a value out of range, a bad cookie, a duplicate session id.
pub fn parse_import(document: Value, defaults: &PoolConfig) -> Result<ImportDocument, DocumentError> {
    let Value::Object(mut top) = document else {
        return Err(DocumentError::new("an import document is a JSON object"));
    };
    let format = detect(&top).ok_or_else(|| {
        DocumentError::new(
            "the document is none of the import forms: this service's export ({\"config\", \"sessions\"}), \
             Crawlee for Python's SessionPoolModel ({\"maxPoolSize\", \"sessions\"}) or Crawlee for \
             JavaScript's SessionPool state (sessions with \"cookieJar\" and \"expiresAt\")",
        )
    })?;
    let pool_config = match format {
        ImportFormat::Own => {
            let config = top.remove("config").ok_or_else(|| DocumentError::new("config: missing"))?;
            own::config(config, defaults)?
        }
        ImportFormat::CrawleePython => match top.remove("maxPoolSize") {
            Some(size) => {
                let Int(max_pool_size) = typed(size, "maxPoolSize")?;
                let config = PoolConfig { max_pool_size, ..defaults.clone() };
                config.validate().map_err(|e| DocumentError(format!("maxPoolSize: {e}")))?;
                config
            }
            None => defaults.clone(),
        },
        ImportFormat::CrawleeJs => defaults.clone(),
    };
    let sessions = match top.remove("sessions") {
        Some(Value::Array(sessions)) => sessions,
        Some(_) => return Err(DocumentError::new("sessions: must be a list")),
        None => return Err(DocumentError::new("sessions: missing")),
    };
    let mut seen = HashSet::with_capacity(sessions.len());
    let mut parsed = Vec::with_capacity(sessions.len());
    for (index, raw) in sessions.into_iter().enumerate() {
        let at = format!("sessions[{index}]");
        let session = match format {
            ImportFormat::Own => {
                let (settings, doc) = typed_apart::<SettingsPatch, OwnSessionDoc>(raw, &at)?;
                doc.into_imported(settings)
            }
            ImportFormat::CrawleePython => {
                let (record, doc) = typed_apart::<CrawleeRecord, PythonSessionDoc>(raw, &at)?;
                Ok(doc.into_imported(record))
            }
            ImportFormat::CrawleeJs => {
                let (record, doc) = typed_apart::<CrawleeRecord, JsSessionDoc>(raw, &at)?;
                doc.into_imported(record)
            }
        }
        .and_then(check_session)
        .map_err(|e| DocumentError(format!("{at}: {e}")))?;
        if !seen.insert(session.id.clone()) {
            return Err(DocumentError(format!("{at}: the id {:?} appears more than once", session.id)));
        }
        parsed.push(session);
    }
    Ok(ImportDocument { format, pool_config, sessions: parsed })
}

/// Which form a document has, by its shape (see [`ImportFormat`]).
fn detect(top: &Map<String, Value>) -> Option<ImportFormat> {
    if top.contains_key("config") {
        return Some(ImportFormat::Own);
    }
    if top.contains_key("maxPoolSize") {
        return Some(ImportFormat::CrawleePython);
    }
    if top.contains_key("usableSessionsCount") || top.contains_key("retiredSessionsCount") {
        return Some(ImportFormat::CrawleeJs);
    }
    let sessions = top.get("sessions")?.as_array()?;
    sessions.iter().filter_map(Value::as_object).find_map(|session| {
        if session.contains_key("cookieJar") || session.contains_key("expiresAt") {
            Some(ImportFormat::CrawleeJs)
        } else if session.contains_key("maxAge") || session.contains_key("createdAt") {
            Some(ImportFormat::CrawleePython)
        } else if session.contains_key("created_at") {
            Some(ImportFormat::Own)
        } else {
            None
        }
    })
}

/// Deserializes `value` as `T`, naming `at` and the field inside it in the error.
fn typed<T: DeserializeOwned>(value: Value, at: &str) -> Result<T, DocumentError> {
    serde_path_to_error::deserialize(value).map_err(|e| match field_of(&e) {
        Some(path) => DocumentError(format!("{at}.{path}: {}", e.inner())),
        None => DocumentError(format!("{at}: {}", e.inner())),
    })
}

/// Deserializes the fields of the object `value` that `G` lists as `G`, and the others as `T`: a group
/// of fields several forms share, read apart so that an error still names the field where it stands
/// (`sessions[1].createdAt`).
fn typed_apart<G: DeserializeOwned + Fields, T: DeserializeOwned>(
    mut value: Value,
    at: &str,
) -> Result<(G, T), DocumentError> {
    let group = value.as_object_mut().map(split_off::<G>).unwrap_or_default();
    let rest = typed(value, at)?;
    Ok((typed(Value::Object(group), at)?, rest))
}

/// What both Crawlee forms write of a session, under the same names (Crawlee for Python is a port
/// of the JavaScript `Session`); each form adds its own age, cookies and status codes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CrawleeRecord {
    id: String,
    user_data: Option<Map<String, Value>>,
    max_error_score: Option<f64>,
    error_score_decrement: Option<f64>,
    created_at: Timestamp,
    #[serde(default, deserialize_with = "json_int::opt")]
    usage_count: Option<u32>,
    #[serde(default, deserialize_with = "json_int::opt")]
    max_usage_count: Option<u32>,
    error_score: Option<f64>,
}

impl Fields for CrawleeRecord {
    const FIELDS: &'static [&'static str] = &[
        "id",
        "userData",
        "maxErrorScore",
        "errorScoreDecrement",
        "createdAt",
        "usageCount",
        "maxUsageCount",
        "errorScore",
    ];
}

impl CrawleeRecord {
    /// The session, with what the form gives besides the record.
    fn into_imported(
        self,
        max_age_secs: Option<f64>,
        blocked_status_codes: Option<Vec<u16>>,
        cookies: Vec<Cookie>,
    ) -> ImportedSession {
        ImportedSession {
            id: self.id,
            created_at: self.created_at,
            settings: SettingsPatch {
                max_age_secs,
                max_usage_count: self.max_usage_count,
                max_error_score: self.max_error_score,
                error_score_decrement: self.error_score_decrement,
                blocked_status_codes,
            },
            usage_count: self.usage_count.unwrap_or(0),
            error_score: self.error_score.unwrap_or(0.0),
            user_data: self.user_data.unwrap_or_default(),
            cookies,
            proxy_url: None,
            retirement: None,
        }
    }
}

/// The checks every form shares: settings in range, a finite non-negative score, valid cookies.
fn check_session(session: ImportedSession) -> Result<ImportedSession, DocumentError> {
    // Resolving over the pool's settings later cannot fail (see SettingsPatch::validate).
    session.settings.validate().map_err(|e| DocumentError(e.to_string()))?;
    check_time("created_at", session.created_at)?;
    if let Some(at) = session.retirement.and_then(|r| r.at) {
        check_time("retired_at", at)?;
    }
    if !(session.error_score.is_finite() && session.error_score >= 0.0) {
        return Err(DocumentError::new("error_score: must be a finite number >= 0"));
    }
    for cookie in &session.cookies {
        cookie.validate().map_err(|e| DocumentError(format!("cookies: {e}")))?;
    }
    if let Some(url) = &session.proxy_url {
        validate_proxy_url(url).map_err(|reason| DocumentError(format!("proxy_url: {reason}")))?;
    }
    Ok(session)
}

/// Keeps times within RFC 3339's years 0001..=9999, so adding a session's age or the retention to
/// them can never leave chrono's range (chrono itself parses years up to 262142).
fn check_time(field: &str, at: Timestamp) -> Result<(), DocumentError> {
    if (1..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err(DocumentError(format!("{field}: {} is not in the years 0001..=9999", at.to_rfc3339())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};
    use serde_json::json;

    fn t0() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_field_read_apart_is_named_where_it_stands() {
        let message = |doc: Value| parse_import(doc, &PoolConfig::default()).unwrap_err().0;
        let own = json!({"config": {}, "sessions": [{"id": "a", "created_at": "2026-11-25T19:00:00Z", "max_usage_count": 1.5}]});
        let own = message(own);
        assert!(own.starts_with("sessions[0].max_usage_count: invalid"), "{own}");
        let python = json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "yesterday", "maxAge": "PT1M"}]});
        assert!(message(python).starts_with("sessions[0].createdAt: "));
        let config = json!({"config": {"session": {"max_age_secs": "long", "note": 1}}, "sessions": []});
        assert!(message(config).starts_with("config.session: max_age_secs: invalid type"));
    }

    #[test]
    fn the_crawlee_record_lists_its_fields() {
        assert_eq!(crate::json::strict::serde_fields::<CrawleeRecord>(), CrawleeRecord::FIELDS);
    }

    #[test]
    fn unusable_sessions_come_in_retired_at_import_time_unless_recorded() {
        let doc = |session: Value| {
            let top = json!({"config": {}, "sessions": [session]});
            parse_import(top, &PoolConfig::default()).map(|d| d.sessions.into_iter().next().unwrap())
        };
        let settings = Arc::new(SessionSettings::default());
        let now = t0() + TimeDelta::seconds(10);
        let fresh = doc(json!({"id": "a", "created_at": "2026-11-25T19:00:00Z"})).unwrap();
        assert!(fresh.into_session(Arc::clone(&settings), now).retirement.is_none());
        let blocked = doc(json!({"id": "a", "created_at": "2026-11-25T19:00:00Z", "error_score": 3.0})).unwrap();
        let retirement = blocked.into_session(Arc::clone(&settings), now).retirement.unwrap();
        assert_eq!((retirement.reason, retirement.at), (RetiredReason::Blocked, now));
        let recorded = doc(json!({"id": "a", "created_at": "2026-11-25T19:00:00Z", "retired": true,
            "retired_reason": "retired", "retired_at": "2026-11-25T19:00:05Z"}))
        .unwrap();
        let retirement = recorded.into_session(settings, now).retirement.unwrap();
        assert_eq!((retirement.reason, retirement.at), (RetiredReason::Retired, t0() + TimeDelta::seconds(5)));
    }

    #[test]
    fn malformed_documents_name_their_problem() {
        let check = |doc: Value, needle: &str| {
            let err = parse_import(doc, &PoolConfig::default()).unwrap_err();
            assert!(err.0.contains(needle), "{err} should mention {needle}");
        };
        check(json!([]), "JSON object");
        check(json!({"sessions": []}), "none of the import forms");
        check(json!({"config": {"max_pool_size": 2_000_000}, "sessions": []}), "max_pool_size");
        check(json!({"maxPoolSize": -1, "sessions": []}), "maxPoolSize");
        let s = json!({"id": "a", "createdAt": "2026-11-25T19:00:00Z", "maxAge": "PT1M"});
        check(json!({"maxPoolSize": 1, "sessions": [s, s]}), "more than once");
        check(json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "yesterday"}]}), "sessions[0]");
        check(
            json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "2026-11-25T19:00:00Z", "maxAge": "soon"}]}),
            "maxAge",
        );
        check(
            json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "2026-11-25T19:00:00Z", "usageCount": 1.5}]}),
            "sessions[0]",
        );
        check(
            json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "2026-11-25T19:00:00Z", "errorScore": -1}]}),
            "error_score",
        );
        check(
            json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "2026-11-25T19:00:00Z", "cookies": [{"name": "", "value": "x"}]}]}),
            "cookie",
        );
        check(
            json!({"sessions": [{"id": "a", "createdAt": "2026-11-25T19:00:00Z", "expiresAt": "2026-11-25T18:00:00Z"}]}),
            "expiresAt",
        );
        check(
            json!({"config": {}, "sessions": [{"id": "a", "created_at": "2026-11-25T19:00:00Z", "retired_reason": "tired"}]}),
            "retired_reason",
        );
        check(
            json!({"config": {}, "sessions": [{"id": "a", "created_at": "2026-11-25T19:00:00Z", "proxy_url": "ftp://x"}]}),
            "proxy_url",
        );
        check(
            json!({"maxPoolSize": 1, "sessions": [{"id": "a", "createdAt": "+262142-12-31T23:59:59Z"}]}),
            "created_at",
        );
        check(
            json!({"config": {}, "sessions": [{"id": "a", "created_at": "2026-11-25T19:00:00Z", "retired": true,
                "retired_at": "-0001-01-01T00:00:00Z"}]}),
            "retired_at",
        );
    }
}
