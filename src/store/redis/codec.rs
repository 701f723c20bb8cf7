//! How sessions and pool configurations are written in Redis hashes, and read back. The layout is
//! in `pool.lua`'s header; this module is its Rust half.
//!
//! Numbers are written as Rust writes them (`f64`'s `Display` is the shortest string that reads
//! back to the same value), instants as microseconds since the Unix epoch. Reading is strict: a
//! field that does not parse is an error naming the field, never a default.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::DateTime;
use redis::Value;
use serde::Serialize;
use uuid::Uuid;

use crate::pool::{PoolConfig, PoolConfigPatch};
use crate::session::{Cookie, Lease, RetiredReason, Retirement, Session, SessionId, SessionSettings, Timestamp};

/// What is wrong with a stored value: the field and why.
pub type Damage = String;

/// An instant as stored: microseconds since the epoch.
pub fn micros(at: Timestamp) -> String {
    at.timestamp_micros().to_string()
}

fn instant(field: &str, raw: &str) -> Result<Timestamp, Damage> {
    raw.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| format!("{field}: {raw:?} is not an instant in microseconds"))
}

fn number<T: std::str::FromStr>(field: &str, raw: &str) -> Result<T, Damage> {
    raw.parse().map_err(|_| format!("{field}: {raw:?} is not a number of the expected kind"))
}

/// Status codes as stored: comma-separated, `""` for none.
pub fn codes(codes: &[u16]) -> String {
    codes.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

fn codes_of(raw: &str) -> Result<Arc<[u16]>, Damage> {
    raw.split(',').filter(|c| !c.is_empty()).map(|c| number::<u16>("b", c)).collect()
}

/// The key a cookie is stored under in a jar: its (name, domain, path), the identity by which
/// cookies replace each other.
pub fn cookie_key(cookie: &Cookie) -> String {
    cookie_key_of(&cookie.name, &cookie.domain, &cookie.path)
}

/// [`cookie_key`] from its parts.
pub fn cookie_key_of(name: &str, domain: &str, path: &str) -> String {
    serde_json::to_string(&(name, domain, path)).unwrap_or_default()
}

/// A cookie as a jar entry stores it.
pub fn cookie_json(cookie: &Cookie) -> String {
    serde_json::to_string(cookie).unwrap_or_default()
}

/// A jar as stored: a JSON list of `[key, cookie JSON]`; `None` for an empty jar.
pub fn jar(cookies: &[Cookie]) -> Option<String> {
    if cookies.is_empty() {
        return None;
    }
    let entries: Vec<(String, String)> = cookies.iter().map(|c| (cookie_key(c), cookie_json(c))).collect();
    serde_json::to_string(&entries).ok()
}

fn jar_of(raw: &str) -> Result<Vec<Cookie>, Damage> {
    let entries: Vec<(String, String)> = serde_json::from_str(raw).map_err(|e| format!("j: not a jar ({e})"))?;
    entries
        .iter()
        .map(|(_, json)| serde_json::from_str::<Cookie>(json).map_err(|e| format!("j: a cookie does not read ({e})")))
        .collect()
}

/// A session's settings as stored, each field on its own.
pub fn settings_fields(settings: &SessionSettings) -> [(&'static str, String); 5] {
    [
        ("ma", settings.max_age_secs.to_string()),
        ("mu", settings.max_usage_count.to_string()),
        ("me", settings.max_error_score.to_string()),
        ("d", settings.error_score_decrement.to_string()),
        ("b", codes(&settings.blocked_status_codes)),
    ]
}

/// Every field of a session as stored. A lease is kept only while it lasts (`now`).
pub fn session_fields(session: &Session, now: Timestamp) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("c", micros(session.created_at)),
        ("e", micros(session.expires_at)),
        ("u", session.usage_count.to_string()),
        ("s", session.error_score.to_string()),
        ("v", "0".to_owned()),
    ];
    fields.extend(settings_fields(&session.settings));
    if let Some(retirement) = session.retirement {
        fields.push(("r", retirement.reason.as_str().to_owned()));
        fields.push(("ra", micros(retirement.at)));
    } else if let Some(lease) = session.live_lease(now) {
        fields.push(("l", lease.id.simple().to_string()));
        fields.push(("lu", micros(lease.until)));
    }
    if let Some(proxy) = &session.proxy_url {
        fields.push(("p", proxy.to_string()));
    }
    if !session.user_data.is_empty() {
        fields.push(("ud", serde_json::Value::Object(session.user_data.clone()).to_string()));
    }
    if let Some(jar) = jar(&session.cookies) {
        fields.push(("j", jar));
    }
    fields
}

/// A Redis reply value as text.
pub fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A flat `field, value, ...` list as a map.
pub fn fields_of(flat: &[Value]) -> Result<HashMap<&str, &str>, Damage> {
    flat.chunks(2)
        .map(|pair| match pair {
            [field, value] => {
                Ok((text(field).ok_or("a field name is not text")?, text(value).ok_or("a value is not text")?))
            }
            _ => Err("a field without a value".to_owned()),
        })
        .collect()
}

/// The session `id` from its stored fields; `version` is its compare-and-set version.
pub fn session_of(id: &str, flat: &[Value]) -> Result<(Session, u64), Damage> {
    let f = fields_of(flat)?;
    let get = |name: &str| f.get(name).copied().ok_or_else(|| format!("{name}: missing"));
    let settings = SessionSettings {
        max_age_secs: number("ma", get("ma")?)?,
        max_usage_count: number("mu", get("mu")?)?,
        max_error_score: number("me", get("me")?)?,
        error_score_decrement: number("d", get("d")?)?,
        blocked_status_codes: codes_of(f.get("b").copied().unwrap_or(""))?,
    };
    let retirement = match f.get("r") {
        Some(reason) => Some(Retirement {
            reason: RetiredReason::parse(reason).ok_or_else(|| format!("r: {reason:?} is not a reason"))?,
            at: instant("ra", get("ra")?)?,
        }),
        None => None,
    };
    let lease = match (f.get("l"), f.get("lu")) {
        (Some(id), Some(until)) => Some(Lease {
            id: Uuid::try_parse(id).map_err(|_| format!("l: {id:?} is not a lease id"))?,
            until: instant("lu", until)?,
        }),
        _ => None,
    };
    let user_data = match f.get("ud") {
        Some(raw) => match serde_json::from_str(raw) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err("ud: not a JSON object".into()),
        },
        None => serde_json::Map::new(),
    };
    let session = Session {
        id: SessionId::from(id),
        created_at: instant("c", get("c")?)?,
        expires_at: instant("e", get("e")?)?,
        settings: Arc::new(settings),
        usage_count: number("u", get("u")?)?,
        error_score: number("s", get("s")?)?,
        lease,
        retirement,
        user_data,
        cookies: f.get("j").map_or(Ok(Vec::new()), |raw| jar_of(raw))?,
        proxy_url: f.get("p").map(|p| Box::from(*p)),
    };
    let version = f.get("v").map_or(Ok(0), |v| number("v", v))?;
    Ok((session, version))
}

/// A pool's configuration as the API writes it, stored whole for reading back.
#[derive(Serialize)]
struct ConfigDocument<'a> {
    max_pool_size: u32,
    session: &'a SessionSettings,
    proxy_urls: &'a [String],
    proxy_url_template: Option<&'a str>,
}

/// A pool's configuration as stored: the whole of it (`cfg`, read back by [`config_of`]) and the
/// fields the script creates sessions with.
pub fn config_fields(config: &PoolConfig) -> Vec<(&'static str, String)> {
    let document = ConfigDocument {
        max_pool_size: config.max_pool_size,
        session: &config.session,
        proxy_urls: &config.proxy_urls,
        proxy_url_template: config.proxy_url_template.as_deref(),
    };
    let mut fields =
        vec![("cfg", serde_json::to_string(&document).unwrap_or_default()), ("mps", config.max_pool_size.to_string())];
    fields.extend(settings_fields(&config.session));
    if let Some(template) = &config.proxy_url_template {
        fields.push(("pt", template.clone()));
    }
    if !config.proxy_urls.is_empty() {
        fields.push(("px", config.proxy_urls.join("\n")));
    }
    fields
}

/// A pool's configuration from its stored `cfg`.
pub fn config_of(raw: &str, defaults: &PoolConfig) -> Result<PoolConfig, Damage> {
    let patch: PoolConfigPatch = serde_json::from_str(raw).map_err(|e| format!("cfg: does not read ({e})"))?;
    patch.resolve(defaults).map_err(|e| format!("cfg: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SameSite, Timestamp};
    use chrono::TimeZone;

    fn at(secs: i64) -> Timestamp {
        chrono::Utc.timestamp_opt(secs, 123_456_000).unwrap()
    }

    fn flat(fields: &[(&'static str, String)]) -> Vec<Value> {
        fields
            .iter()
            .flat_map(|(f, v)| [Value::BulkString(f.as_bytes().to_vec()), Value::BulkString(v.as_bytes().to_vec())])
            .collect()
    }

    #[test]
    fn a_session_reads_back_as_it_was_written() {
        let settings = SessionSettings {
            max_age_secs: 0.1,
            max_usage_count: 7,
            max_error_score: 2.75,
            error_score_decrement: 0.1 + 0.2,
            blocked_status_codes: Arc::from([].as_slice()),
        };
        let mut session = Session::new(SessionId::from("a_1"), Arc::new(settings), at(1_800_000_000));
        session.error_score = 1.0 / 3.0;
        session.usage_count = 3;
        session.proxy_url = Some("http://u:p@proxy:1".into());
        session.user_data.insert("big".into(), serde_json::json!(12345678901234567_u64));
        session.cookies = vec![
            Cookie { same_site: Some(SameSite::Lax), expires: Some(i64::MAX / 2), ..Cookie::simple("a", "1") },
            Cookie::simple("b", "2"),
        ];
        session.lease = Some(Lease { id: Uuid::new_v4(), until: at(1_800_000_100) });
        let (back, version) = session_of("a_1", &flat(&session_fields(&session, at(1_800_000_001)))).unwrap();
        assert_eq!(version, 0);
        assert_eq!(back.settings, session.settings);
        assert_eq!(
            (back.created_at, back.expires_at, back.usage_count, back.error_score),
            (session.created_at, session.expires_at, 3, 1.0 / 3.0)
        );
        assert_eq!((back.lease, back.retirement), (session.lease, None));
        assert_eq!(
            (back.user_data, back.cookies, back.proxy_url),
            (session.user_data.clone(), session.cookies.clone(), session.proxy_url.clone())
        );

        session.retirement = Some(Retirement { reason: RetiredReason::BlockedStatusCode, at: at(1_800_000_002) });
        let (back, _) = session_of("a_1", &flat(&session_fields(&session, at(1_800_000_003)))).unwrap();
        assert_eq!((back.retirement, back.lease), (session.retirement, None), "a retired session keeps no lease");
    }

    #[test]
    fn a_damaged_field_is_named() {
        let session = Session::new(SessionId::from("x"), Arc::new(SessionSettings::default()), at(0));
        let mut fields = session_fields(&session, at(0));
        fields.retain(|(f, _)| *f != "u");
        assert_eq!(session_of("x", &flat(&fields)).unwrap_err(), "u: missing");
        fields.push(("u", "-1".into()));
        assert!(session_of("x", &flat(&fields)).unwrap_err().starts_with("u: \"-1\""));
    }

    #[test]
    fn a_config_reads_back_as_it_was_written() {
        let config = PoolConfig {
            max_pool_size: 0,
            proxy_urls: vec!["http://a:1".into(), "socks5://b:2".into()],
            proxy_url_template: Some("http://s-{session_id}:p@g:1".into()),
            ..PoolConfig::default()
        };
        let fields = config_fields(&config);
        let cfg = &fields.iter().find(|(f, _)| *f == "cfg").unwrap().1;
        assert_eq!(config_of(cfg, &PoolConfig::default()).unwrap(), config);
    }
}
