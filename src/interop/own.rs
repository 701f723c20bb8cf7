//! This service's own export form: `{"config", "sessions"}`, the API's PoolConfig and Session
//! objects. The settings are read apart from the other fields, as a [`SettingsPatch`].

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{DocumentError, ImportedSession, RecordedRetirement};
use crate::json::int as json_int;
use crate::json::strict::Lenient;
use crate::pool::PoolConfig;
use crate::session::settings::SettingsPatch;
use crate::session::{Cookie, RetiredReason, Timestamp};

#[derive(Debug, Deserialize)]
pub(super) struct ConfigDoc {
    #[serde(default, deserialize_with = "json_int::opt")]
    max_pool_size: Option<u32>,
    session: Option<Lenient<SettingsPatch>>,
    proxy_urls: Option<Vec<String>>,
    proxy_url_template: Option<String>,
}

impl ConfigDoc {
    pub(super) fn resolve(self, defaults: &PoolConfig) -> Result<PoolConfig, DocumentError> {
        let settings = self.session.map(|Lenient(s)| s).unwrap_or_default();
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

/// API.md's Session object but its settings (read apart, as a [`SettingsPatch`]); the derived fields (`expires_at`, `is_*`, `pool`, `leased_until`) are
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
