//! Conversions between the domain ([`Session`], [`PoolConfig`]) and the documents that move pools in
//! and out of the service: its own export form, Crawlee for Python's persisted `SessionPoolModel`
//! and Crawlee for JavaScript's `SessionPool.getState()`.
//!
//! Pure functions over `serde_json` values and domain types; no HTTP, no clock (time comes in as
//! `now`). The API layer (`api::transfer`) parses the body, calls [`parse_import`], checks the
//! session ids with the API's rule, locks the pool and turns each [`ImportedSession`] into a
//! [`Session`]; for export it calls [`crawlee_pool_state`] (the own form is the API's views).
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

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{Datelike, SecondsFormat, SubsecRound, TimeDelta};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::json::int::{self as json_int, Int};
use crate::json::strict::{field_of, split_off};
use crate::pool::{validate_proxy_url, PoolConfig};
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, RetiredReason, Retirement, SameSite, Session, SessionId, SessionSettings, Timestamp};

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
    /// Cookies, validated, in API.md's shape.
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
            typed::<ConfigDoc>(config, "config")?.resolve(defaults)?
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
            ImportFormat::Own => OwnSessionDoc::parse(raw, &at),
            ImportFormat::CrawleePython => typed::<PythonSessionDoc>(raw, &at)?.into_imported(),
            ImportFormat::CrawleeJs => typed::<JsSessionDoc>(raw, &at)?.into_imported(),
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

// ---------------------------------------------------------------------------------------------
// The own form

/// PoolConfig in the own form; a missing field takes the server's default, as a PUT does.
#[derive(Debug, Deserialize)]
struct ConfigDoc {
    #[serde(default, deserialize_with = "json_int::opt")]
    max_pool_size: Option<u32>,
    session: Option<Map<String, Value>>,
    proxy_urls: Option<Vec<String>>,
    proxy_url_template: Option<String>,
}

impl ConfigDoc {
    fn resolve(self, defaults: &PoolConfig) -> Result<PoolConfig, DocumentError> {
        let settings = settings_of(self.session.unwrap_or_default(), "config.session")?;
        let config = PoolConfig {
            max_pool_size: self.max_pool_size.unwrap_or(defaults.max_pool_size),
            session: Arc::new(settings.resolve(&defaults.session).map_err(|e| DocumentError(format!("config: {e}")))?),
            proxy_urls: self.proxy_urls.unwrap_or_default(),
            proxy_url_template: self.proxy_url_template,
        };
        config.validate().map_err(|e| DocumentError(format!("config: {e}")))?;
        Ok(config)
    }
}

/// The settings among the fields of `object` (the others are ignored), checked for type.
fn settings_of(mut object: Map<String, Value>, at: &str) -> Result<SettingsPatch, DocumentError> {
    typed(Value::Object(split_off::<SettingsPatch>(&mut object)), at)
}

/// API.md's Session object but its settings (read apart, as a [`SettingsPatch`]); the derived fields (`expires_at`, `is_*`, `pool`, `leased_until`) are
/// ignored: they follow from the others.
#[derive(Debug, Deserialize)]
struct OwnSessionDoc {
    id: String,
    created_at: Timestamp,
    #[serde(default, deserialize_with = "json_int::opt")]
    usage_count: Option<u32>,
    error_score: Option<f64>,
    user_data: Option<Map<String, Value>>,
    cookies: Option<Vec<CookieDoc>>,
    proxy_url: Option<String>,
    retired: Option<bool>,
    retired_reason: Option<String>,
    retired_at: Option<Timestamp>,
}

impl OwnSessionDoc {
    /// Reads the session `raw`, at `at` in the document.
    fn parse(mut raw: Value, at: &str) -> Result<ImportedSession, DocumentError> {
        let settings = raw.as_object_mut().map(split_off::<SettingsPatch>).unwrap_or_default();
        let settings = settings_of(settings, at)?;
        typed::<Self>(raw, at)?.into_imported(settings)
    }

    fn into_imported(self, settings: SettingsPatch) -> Result<ImportedSession, DocumentError> {
        let reason = match self.retired_reason.as_deref() {
            Some(name) => Some(RetiredReason::parse(name).ok_or_else(|| {
                DocumentError(format!(
                    "retired_reason: {name:?} is not one of retired, blocked, blocked_status_code, expired, \
                     max_usage_count"
                ))
            })?),
            None => None,
        };
        // `retired` decides; without it, a reason or a time says the session retired.
        let retired = self.retired.unwrap_or(reason.is_some() || self.retired_at.is_some());
        Ok(ImportedSession {
            id: self.id,
            created_at: self.created_at,
            settings,
            usage_count: self.usage_count.unwrap_or(0),
            error_score: self.error_score.unwrap_or(0.0),
            user_data: self.user_data.unwrap_or_default(),
            cookies: self.cookies.unwrap_or_default().into_iter().map(CookieDoc::into_cookie).collect(),
            proxy_url: self.proxy_url,
            retirement: retired.then_some(RecordedRetirement { reason, at: self.retired_at }),
        })
    }
}

/// A cookie in API.md's shape, which is also Crawlee for Python's `CookieParam`; unlike
/// [`Cookie`]'s own parser, fields this service does not know are ignored.
#[derive(Debug, Deserialize)]
struct CookieDoc {
    name: String,
    value: String,
    #[serde(default)]
    domain: String,
    #[serde(default = "root_path")]
    path: String,
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    http_only: bool,
    #[serde(default, deserialize_with = "json_int::opt")]
    expires: Option<i64>,
    #[serde(default)]
    same_site: Option<SameSite>,
}

fn root_path() -> String {
    "/".into()
}

impl CookieDoc {
    fn into_cookie(self) -> Cookie {
        Cookie {
            name: self.name,
            value: self.value,
            domain: self.domain,
            path: self.path,
            secure: self.secure,
            http_only: self.http_only,
            expires: self.expires,
            same_site: self.same_site,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crawlee for Python

/// `SessionModel` as Crawlee for Python persists it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PythonSessionDoc {
    id: String,
    #[serde(default, deserialize_with = "duration_secs")]
    max_age: Option<f64>,
    user_data: Option<Map<String, Value>>,
    max_error_score: Option<f64>,
    error_score_decrement: Option<f64>,
    created_at: Timestamp,
    #[serde(default, deserialize_with = "json_int::opt")]
    usage_count: Option<u32>,
    #[serde(default, deserialize_with = "json_int::opt")]
    max_usage_count: Option<u32>,
    error_score: Option<f64>,
    cookies: Option<Vec<CookieDoc>>,
    #[serde(default, deserialize_with = "json_int::opt_list")]
    blocked_status_codes: Option<Vec<u16>>,
}

impl PythonSessionDoc {
    fn into_imported(self) -> Result<ImportedSession, DocumentError> {
        Ok(ImportedSession {
            id: self.id,
            created_at: self.created_at,
            settings: SettingsPatch {
                max_age_secs: self.max_age,
                max_usage_count: self.max_usage_count,
                max_error_score: self.max_error_score,
                error_score_decrement: self.error_score_decrement,
                blocked_status_codes: self.blocked_status_codes,
            },
            usage_count: self.usage_count.unwrap_or(0),
            error_score: self.error_score.unwrap_or(0.0),
            user_data: self.user_data.unwrap_or_default(),
            cookies: self.cookies.unwrap_or_default().into_iter().map(CookieDoc::into_cookie).collect(),
            proxy_url: None,
            retirement: None,
        })
    }
}

/// `maxAge` as pydantic reads a `timedelta`: an ISO 8601 duration string, or a number of seconds.
fn duration_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| D::Error::custom("maxAge: not a number")),
        Some(Value::String(s)) => parse_iso_duration(&s)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format_args!("maxAge: {s:?} is not an ISO 8601 duration such as PT50M"))),
        Some(other) => Err(D::Error::custom(format_args!("maxAge: expected an ISO 8601 duration, got {other}"))),
    }
}

/// Seconds of an ISO 8601 duration (`PT50M`, `PT0.5S`, `P1DT2H`). Years count 365 days, months 30
/// and weeks 7, as pydantic reads them; a sign is not accepted (no session lives a negative time).
pub fn parse_iso_duration(raw: &str) -> Option<f64> {
    const DATE: [(char, f64); 4] =
        [('Y', 365.0 * 86_400.0), ('M', 30.0 * 86_400.0), ('W', 7.0 * 86_400.0), ('D', 86_400.0)];
    const TIME: [(char, f64); 3] = [('H', 3600.0), ('M', 60.0), ('S', 1.0)];
    let rest = raw.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut secs = 0.0;
    let mut components = duration_components(date, &DATE, &mut secs)?;
    if let Some(time) = time {
        components += duration_components(time, &TIME, &mut secs)?;
    }
    (components > 0 && secs.is_finite()).then_some(secs)
}

/// Adds the `<number><unit>` components of one part of a duration to `secs`, units in order;
/// returns how many there were.
fn duration_components(mut part: &str, units: &[(char, f64)], secs: &mut f64) -> Option<usize> {
    let mut next = 0;
    let mut count = 0;
    while !part.is_empty() {
        let end = part.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))?;
        let number: f64 = part[..end].replace(',', ".").parse().ok()?;
        let unit = part[end..].chars().next()?;
        let index = next + units[next..].iter().position(|(u, _)| *u == unit)?;
        *secs += number * units[index].1;
        next = index + 1;
        count += 1;
        part = &part[end + unit.len_utf8()..];
    }
    Some(count)
}

/// `secs` as an ISO 8601 duration the way pydantic writes a `timedelta` (`PT50M`, `PT0.5S`,
/// `P1DT1H`), at microsecond precision (Python's), with days as the largest unit.
pub fn format_iso_duration(secs: f64) -> String {
    const MICROS_PER_SEC: u64 = 1_000_000;
    let total = (secs * 1e6).round().max(0.0) as u64;
    let days = total / (86_400 * MICROS_PER_SEC);
    let rest = total % (86_400 * MICROS_PER_SEC);
    let hours = rest / (3600 * MICROS_PER_SEC);
    let minutes = rest % (3600 * MICROS_PER_SEC) / (60 * MICROS_PER_SEC);
    let micros = rest % (60 * MICROS_PER_SEC);
    let mut out = String::from("P");
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    if rest > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes > 0 {
            let _ = write!(out, "{minutes}M");
        }
        if micros > 0 || rest == 0 {
            let (whole, fraction) = (micros / MICROS_PER_SEC, micros % MICROS_PER_SEC);
            if fraction == 0 {
                let _ = write!(out, "{whole}S");
            } else {
                let digits = format!("{fraction:06}");
                let _ = write!(out, "{whole}.{}S", digits.trim_end_matches('0'));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Crawlee for JavaScript

/// `SessionState` as Crawlee for JavaScript's `Session.getState()` writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsSessionDoc {
    id: String,
    cookie_jar: Option<ToughJar>,
    user_data: Option<Map<String, Value>>,
    max_error_score: Option<f64>,
    error_score_decrement: Option<f64>,
    expires_at: Option<Timestamp>,
    created_at: Timestamp,
    #[serde(default, deserialize_with = "json_int::opt")]
    usage_count: Option<u32>,
    #[serde(default, deserialize_with = "json_int::opt")]
    max_usage_count: Option<u32>,
    error_score: Option<f64>,
}

impl JsSessionDoc {
    fn into_imported(self) -> Result<ImportedSession, DocumentError> {
        let max_age_secs = match self.expires_at {
            Some(expires_at) => {
                let age = expires_at - self.created_at;
                if age <= TimeDelta::zero() {
                    return Err(DocumentError::new("expiresAt: must be after createdAt"));
                }
                Some(delta_secs(age))
            }
            None => None,
        };
        let created_at = self.created_at;
        let cookies = self
            .cookie_jar
            .map(|jar| jar.cookies.into_iter().map(|c| c.into_cookie(created_at)).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(ImportedSession {
            id: self.id,
            created_at,
            settings: SettingsPatch {
                max_age_secs,
                max_usage_count: self.max_usage_count,
                max_error_score: self.max_error_score,
                error_score_decrement: self.error_score_decrement,
                blocked_status_codes: None,
            },
            usage_count: self.usage_count.unwrap_or(0),
            error_score: self.error_score.unwrap_or(0.0),
            user_data: self.user_data.unwrap_or_default(),
            cookies,
            proxy_url: None,
            retirement: None,
        })
    }
}

/// A tough-cookie `CookieJar.toJSON()`; only its cookies matter here.
#[derive(Debug, Deserialize)]
struct ToughJar {
    #[serde(default)]
    cookies: Vec<ToughCookie>,
}

/// A tough-cookie `Cookie.toJSON()`: properties at their default are left out.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToughCookie {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    expires: Option<String>,
    max_age: Option<Value>,
    domain: Option<String>,
    path: Option<String>,
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    http_only: bool,
    host_only: Option<bool>,
    creation: Option<Timestamp>,
    same_site: Option<String>,
}

impl ToughCookie {
    /// The cookie in API.md's shape. `created_at` stands in for a missing `creation` when `maxAge`
    /// needs it.
    fn into_cookie(self, created_at: Timestamp) -> Result<Cookie, DocumentError> {
        let bad = |what: String| DocumentError(format!("cookies: cookie {:?}: {what}", self.key));
        let expires = match &self.max_age {
            None | Some(Value::Null) => match self.expires.as_deref() {
                None | Some("Infinity") => None,
                Some(raw) => Some(
                    chrono::DateTime::parse_from_rfc3339(raw)
                        .map_err(|_| bad(format!("expires {raw:?} is neither an ISO 8601 time nor \"Infinity\"")))?
                        .timestamp(),
                ),
            },
            // tough-cookie: maxAge (seconds from creation) wins over expires; <= 0 means expired.
            Some(max_age) => {
                let from = self.creation.unwrap_or(created_at).timestamp();
                match max_age {
                    Value::String(s) if s == "Infinity" => None,
                    Value::String(s) if s == "-Infinity" => Some(from),
                    Value::Number(n) => match n.as_f64() {
                        Some(secs) if secs.is_finite() && secs > 0.0 => {
                            Some(from.saturating_add(secs.min(i64::MAX as f64) as i64))
                        }
                        Some(secs) if secs.is_finite() => Some(from),
                        _ => return Err(bad("maxAge is not a finite number".into())),
                    },
                    other => return Err(bad(format!("maxAge {other} is neither a number nor \"Infinity\""))),
                }
            }
        };
        let same_site = match self.same_site.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("lax") => Some(SameSite::Lax),
            Some("strict") => Some(SameSite::Strict),
            Some("none") => Some(SameSite::None),
            Some(other) => return Err(bad(format!("sameSite {other:?} is not one of lax, strict, none"))),
        };
        let host = self.domain.as_deref().unwrap_or("").trim_start_matches('.');
        let domain = if host.is_empty() {
            String::new()
        } else if self.host_only == Some(true) {
            host.to_owned()
        } else {
            format!(".{host}")
        };
        Ok(Cookie {
            name: self.key,
            value: self.value,
            domain,
            path: self.path.unwrap_or_else(root_path),
            secure: self.secure,
            http_only: self.http_only,
            expires,
            same_site,
        })
    }
}

fn delta_secs(delta: TimeDelta) -> f64 {
    delta.num_seconds() as f64 + f64::from(delta.subsec_nanos()) / 1e9
}

// ---------------------------------------------------------------------------------------------
// Export to Crawlee for Python

/// A pool as Crawlee for Python persists its `SessionPoolModel`, ready to serialize; loadable with
/// `SessionPoolModel.model_validate` (the counts are computed fields Crawlee recomputes on load).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrawleePoolState<'a> {
    max_pool_size: u32,
    sessions: Vec<CrawleeSessionState<'a>>,
    session_count: usize,
    usable_session_count: usize,
    retired_session_count: usize,
}

/// One session as Crawlee for Python's `SessionModel`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrawleeSessionState<'a> {
    id: &'a str,
    max_age: String,
    user_data: &'a Map<String, Value>,
    max_error_score: f64,
    error_score_decrement: f64,
    created_at: String,
    usage_count: u32,
    max_usage_count: u32,
    error_score: f64,
    cookies: &'a [Cookie],
    blocked_status_codes: &'a [u16],
}

/// The pool in Crawlee for Python's form, as of `now`. Crawlee has no retirement flag: it judges a
/// session by its record alone, so a retired session whose record still looks usable (one imported
/// as retired) is written with its error score raised to the maximum, which is what Crawlee's own
/// `retire()` does. Proxy URLs have no place in Crawlee's form and are left out.
pub fn crawlee_pool_state<'a>(
    config: &PoolConfig,
    sessions: impl IntoIterator<Item = &'a Session>,
    now: Timestamp,
) -> CrawleePoolState<'a> {
    let mut usable = 0;
    let sessions: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let retired = session.retirement_at(now).is_some();
            usable += usize::from(!retired);
            let error_score = if retired && session.unusable_reason(now).is_none() {
                session.error_score.max(session.settings.max_error_score)
            } else {
                session.error_score
            };
            CrawleeSessionState {
                id: &session.id,
                max_age: format_iso_duration(session.settings.max_age_secs),
                user_data: &session.user_data,
                max_error_score: session.settings.max_error_score,
                error_score_decrement: session.settings.error_score_decrement,
                created_at: session.created_at.trunc_subsecs(6).to_rfc3339_opts(SecondsFormat::AutoSi, true),
                usage_count: session.usage_count,
                max_usage_count: session.settings.max_usage_count,
                error_score,
                cookies: &session.cookies,
                blocked_status_codes: &session.settings.blocked_status_codes,
            }
        })
        .collect();
    let count = sessions.len();
    CrawleePoolState {
        max_pool_size: config.max_pool_size,
        sessions,
        session_count: count,
        usable_session_count: usable,
        retired_session_count: count - usable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn t0() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&Utc)
    }

    /// Trimmed copies of shared/fixtures (real states written by Crawlee for Python 1.11 and JS 3.18).
    fn python_state() -> Value {
        json!({"maxPoolSize": 3, "sessionCount": 2, "usableSessionCount": 1, "retiredSessionCount": 1, "sessions": [
            {"id": "Qot0CHEkib", "maxAge": "PT50M", "userData": {"login": "alice"}, "maxErrorScore": 3.0,
             "errorScoreDecrement": 0.5, "createdAt": "2026-11-25T19:43:48.860409Z", "usageCount": 1,
             "maxUsageCount": 50, "errorScore": 1.0, "blockedStatusCodes": [401, 403, 429], "cookies": [
                {"name": "sid", "value": "abc123", "domain": "example.com", "path": "/", "secure": true,
                 "http_only": true, "same_site": "Lax"},
                {"name": "theme", "value": "dark", "domain": ".example.com", "path": "/settings", "secure": false,
                 "http_only": false}]},
            {"id": "retired_one", "maxAge": "PT10M", "userData": {}, "maxErrorScore": 3.0, "errorScoreDecrement": 0.5,
             "createdAt": "2026-11-25T19:43:48.860857Z", "usageCount": 0, "maxUsageCount": 50, "errorScore": 3.0,
             "cookies": [], "blockedStatusCodes": [401, 403, 429]}]})
    }

    fn js_state() -> Value {
        json!({"usableSessionsCount": 1, "retiredSessionsCount": 0, "sessions": [{
            "id": "session_ikOi8iLL1l",
            "cookieJar": {"version": "tough-cookie@6.1.0", "storeType": "MemoryCookieStore", "cookies": [
                {"key": "sid", "value": "abc123", "domain": "example.com", "path": "/", "secure": true,
                 "httpOnly": true, "hostOnly": true, "creation": "2026-11-25T19:43:49.193Z",
                 "lastAccessed": "2026-11-25T19:43:49.193Z", "sameSite": "lax"},
                {"key": "theme", "value": "dark", "domain": "example.com", "path": "/settings", "hostOnly": false,
                 "creation": "2026-11-25T19:43:49.194Z", "lastAccessed": "2026-11-25T19:43:49.194Z"}]},
            "userData": {"login": "alice"}, "maxErrorScore": 3, "errorScoreDecrement": 0.5,
            "expiresAt": "2026-11-25T20:33:49.189Z", "createdAt": "2026-11-25T19:43:49.189Z",
            "usageCount": 1, "maxUsageCount": 50, "errorScore": 1}]})
    }

    #[test]
    fn durations_read_and_write_as_pydantic_does() {
        assert_eq!(parse_iso_duration("PT50M"), Some(3000.0));
        assert_eq!(parse_iso_duration("PT0.5S"), Some(0.5));
        assert_eq!(parse_iso_duration("P1DT1H"), Some(90_000.0));
        assert_eq!(parse_iso_duration("PT50M0.5S"), Some(3000.5));
        assert_eq!(parse_iso_duration("P1W"), Some(604_800.0));
        assert_eq!(parse_iso_duration("PT1,5S"), Some(1.5));
        assert_eq!(parse_iso_duration("P1DT"), Some(86_400.0));
        for bad in ["", "P", "PT", "50M", "PT5", "PTM", "PT1S1M", "-PT1S", "PT1e3S", "PT1.2.3S"] {
            assert_eq!(parse_iso_duration(bad), None, "{bad:?}");
        }
        for (secs, text) in [
            (3000.0, "PT50M"),
            (0.5, "PT0.5S"),
            (3600.0, "PT1H"),
            (90_000.0, "P1DT1H"),
            (86_400.0, "P1D"),
            (3000.5, "PT50M0.5S"),
            (0.1, "PT0.1S"),
            (0.000_001, "PT0.000001S"),
            (0.0, "PT0S"),
        ] {
            assert_eq!(format_iso_duration(secs), text);
            assert_eq!(parse_iso_duration(text), Some(secs));
        }
    }

    #[test]
    fn the_python_fixture_parses_with_its_pool_size_and_cookies() {
        let doc = parse_import(python_state(), &PoolConfig::default()).unwrap();
        assert_eq!(doc.format, ImportFormat::CrawleePython);
        assert_eq!(doc.pool_config.max_pool_size, 3);
        assert_eq!(doc.sessions.len(), 2);
        let alice = &doc.sessions[0];
        assert_eq!((alice.id.as_str(), alice.usage_count, alice.error_score), ("Qot0CHEkib", 1, 1.0));
        assert_eq!(alice.settings.max_age_secs, Some(3000.0));
        assert_eq!(alice.cookies[0].domain, "example.com");
        assert_eq!(alice.cookies[0].same_site, Some(SameSite::Lax));
        assert_eq!(alice.cookies[1].domain, ".example.com");
        assert_eq!(alice.cookies[1].path, "/settings");
        assert_eq!(doc.sessions[1].settings.max_age_secs, Some(600.0));
    }

    #[test]
    fn the_js_fixture_maps_tough_cookies_and_expires_at() {
        let doc = parse_import(js_state(), &PoolConfig::default()).unwrap();
        assert_eq!(doc.format, ImportFormat::CrawleeJs);
        let session = &doc.sessions[0];
        assert_eq!(session.settings.max_age_secs, Some(3000.0));
        assert_eq!(session.settings.blocked_status_codes, None);
        let sid = &session.cookies[0];
        assert_eq!((sid.domain.as_str(), sid.secure, sid.http_only), ("example.com", true, true));
        assert_eq!((sid.same_site, sid.expires), (Some(SameSite::Lax), None));
        let theme = &session.cookies[1];
        assert_eq!((theme.domain.as_str(), theme.path.as_str()), (".example.com", "/settings"));
    }

    #[test]
    fn tough_cookie_expiry_follows_max_age_then_expires() {
        let cookie = |extra: Value| {
            let mut c = json!({"key": "a", "value": "1", "domain": "example.com", "creation": "2026-11-25T19:00:00Z"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<ToughCookie>(c).unwrap().into_cookie(t0())
        };
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        assert_eq!(
            cookie(json!({"expires": "2027-01-01T00:00:00.000Z"})).unwrap().expires,
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(cookie(json!({"expires": "Infinity"})).unwrap().expires, None);
        assert_eq!(
            cookie(json!({"maxAge": 60, "expires": "2030-01-01T00:00:00Z"})).unwrap().expires,
            Some(t0().timestamp() + 60)
        );
        assert_eq!(cookie(json!({"maxAge": "Infinity"})).unwrap().expires, None);
        assert_eq!(cookie(json!({"maxAge": 0})).unwrap().expires, Some(t0().timestamp()));
        assert!(cookie(json!({"expires": "tomorrow"})).is_err());
        assert!(cookie(json!({"sameSite": "sometimes"})).is_err());
        assert_eq!(cookie(json!({"sameSite": "strict"})).unwrap().same_site, Some(SameSite::Strict));
        assert_eq!(cookie(json!({})).unwrap().domain, ".example.com", "hostOnly absent is a domain cookie");
        assert_eq!(cookie(json!({"hostOnly": true})).unwrap().domain, "example.com");
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

    #[test]
    fn the_crawlee_export_raises_the_score_of_a_retired_session_that_looks_usable() {
        let settings = Arc::new(SessionSettings::default());
        let mut worn = Session::new(SessionId::from("worn"), Arc::clone(&settings), t0());
        worn.usage_count = 50;
        worn.error_score = 1.0;
        worn.settle(t0());
        let mut imported = Session::new(SessionId::from("imported"), Arc::clone(&settings), t0());
        imported.retirement = Some(Retirement { reason: RetiredReason::Retired, at: t0() });
        let fine = Session::new(SessionId::from("fine"), settings, t0());
        let state = crawlee_pool_state(&PoolConfig::default(), [&worn, &imported, &fine], t0());
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["sessions"][0]["errorScore"], 1.0, "a worn-out session keeps its score");
        assert_eq!(json["sessions"][1]["errorScore"], 3.0);
        assert_eq!(json["sessions"][2]["maxAge"], "PT50M");
        assert_eq!(json["sessions"][2]["createdAt"], "2026-11-25T19:00:00Z");
        assert_eq!((json["sessionCount"].as_u64(), json["usableSessionCount"].as_u64()), (Some(3), Some(1)));
    }
}
