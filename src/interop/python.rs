//! Crawlee for Python: its persisted `SessionPoolModel` (`maxPoolSize`, camelCase sessions, `maxAge`
//! as an ISO 8601 duration) read for import, and written for `GET .../export?format=crawlee`.

use std::fmt::Write as _;

use chrono::{SecondsFormat, SubsecRound};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{CrawleeRecord, ImportedSession};
use crate::json::int as json_int;
use crate::json::strict::Lenient;
use crate::pool::PoolConfig;
use crate::session::{Cookie, Session, Timestamp};

/// `SessionModel` as Crawlee for Python persists it: the [`CrawleeRecord`] and these.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PythonSessionDoc {
    #[serde(default, deserialize_with = "duration_secs")]
    max_age: Option<f64>,
    cookies: Option<Vec<Lenient<Cookie>>>,
    #[serde(default, deserialize_with = "json_int::opt_list")]
    blocked_status_codes: Option<Vec<u16>>,
}

impl PythonSessionDoc {
    pub(super) fn into_imported(self, record: CrawleeRecord) -> ImportedSession {
        let cookies = self.cookies.unwrap_or_default().into_iter().map(|Lenient(c)| c).collect();
        record.into_imported(self.max_age, self.blocked_status_codes, cookies)
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
    use crate::interop::{parse_import, ImportFormat};
    use crate::session::{RetiredReason, Retirement, SameSite, SessionId, SessionSettings};
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use std::sync::Arc;

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
