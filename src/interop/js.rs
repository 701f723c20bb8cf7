//! Crawlee for JavaScript: `SessionPool.getState()`, sessions with `expiresAt` and a tough-cookie
//! `cookieJar`, read for import.

use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::Value;

use super::{CrawleeRecord, DocumentError, ImportedSession};
use crate::session::cookie::root_path;
use crate::session::{Cookie, SameSite, Timestamp};

/// `SessionState` as Crawlee for JavaScript's `Session.getState()` writes it: the [`CrawleeRecord`]
/// and these.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JsSessionDoc {
    cookie_jar: Option<ToughJar>,
    expires_at: Option<Timestamp>,
}

impl JsSessionDoc {
    pub(super) fn into_imported(self, record: CrawleeRecord) -> Result<ImportedSession, DocumentError> {
        let created_at = record.created_at;
        let max_age_secs = match self.expires_at {
            Some(expires_at) => {
                let age = expires_at - created_at;
                if age <= TimeDelta::zero() {
                    return Err(DocumentError::new("expiresAt: must be after createdAt"));
                }
                Some(delta_secs(age))
            }
            None => None,
        };
        let cookies = self
            .cookie_jar
            .map(|jar| jar.cookies.into_iter().map(|c| c.into_cookie(created_at)).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok(record.into_imported(max_age_secs, None, cookies))
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
    /// The cookie in the API's shape. `created_at` stands in for a missing `creation` when
    /// `maxAge` needs it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interop::{parse_import, ImportFormat};
    use crate::pool::PoolConfig;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn t0() -> Timestamp {
        DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&Utc)
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
}
