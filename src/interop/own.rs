//! This service's own export form: `{"config", "sessions"}`, the API's PoolConfig and Session
//! objects, read as the API reads them but leniently. A session's settings are read apart from its
//! other fields, as a [`SettingsPatch`].

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{typed, DocumentError, ImportedSession, RecordedRetirement};
use crate::json::int as json_int;
use crate::json::strict::{split_off, Lenient};
use crate::pool::{PoolConfig, PoolConfigPatch};
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, RetiredReason, Timestamp};

/// The document's `config`: the API's [`PoolConfigPatch`], read leniently. Only the fields it lists,
/// of the object and of its `session`, are read (what another version writes besides is ignored);
/// they are picked out before the typed read, not read through [`Lenient`], so that an error
/// still names the field where it stands (`config.max_pool_size`).
pub(super) fn config(value: Value, defaults: &PoolConfig) -> Result<PoolConfig, DocumentError> {
    let Value::Object(mut object) = value else {
        return Err(DocumentError::new("config: must be an object"));
    };
    let mut known = split_off::<PoolConfigPatch>(&mut object);
    if let Some(Value::Object(session)) = known.get_mut("session") {
        *session = split_off::<SettingsPatch>(session);
    }
    let patch: PoolConfigPatch = typed(Value::Object(known), "config")?;
    patch.resolve(defaults).map_err(|e| DocumentError(format!("config: {e}")))
}

/// A session of the own form: the API's Session object without its settings, which are read apart
/// (as a [`SettingsPatch`]). The derived fields (`expires_at`, `is_*`, `pool`, `leased_until`) are
/// ignored: they follow from the others.
#[derive(Debug, Deserialize)]
pub(super) struct OwnSessionDoc {
    id: String,
    created_at: Timestamp,
    #[serde(default, deserialize_with = "json_int::opt")]
    usage_count: Option<u32>,
    error_score: Option<f64>,
    user_data: Option<Map<String, Value>>,
    cookies: Option<Vec<Lenient<Cookie>>>,
    proxy_url: Option<String>,
    retired: Option<bool>,
    retired_reason: Option<String>,
    retired_at: Option<Timestamp>,
}

impl OwnSessionDoc {
    pub(super) fn into_imported(self, settings: SettingsPatch) -> Result<ImportedSession, DocumentError> {
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
            cookies: self.cookies.unwrap_or_default().into_iter().map(|Lenient(c)| c).collect(),
            proxy_url: self.proxy_url,
            retirement: retired.then_some(RecordedRetirement { reason, at: self.retired_at }),
        })
    }
}
