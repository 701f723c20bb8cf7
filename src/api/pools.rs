//! `/v1/pools`: create, reconfigure, read and delete named pools.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};

use super::{check_pool_name, format_time, json_response, now, to_json, AppJson, AppPath, AppState};
use crate::error::Result;
use crate::json::int as json_int;
use crate::json::strict::Obj;
use crate::pool::{Pool, PoolConfig};
use crate::session::SessionSettings;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pools", get(list_pools))
        .route("/v1/pools/{pool}", get(get_pool).put(put_pool).delete(delete_pool))
}

/// SessionSettings as a request gives them: every field optional, a missing one takes `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettingsInput {
    max_age_secs: Option<f64>,
    #[serde(default, deserialize_with = "json_int::opt")]
    max_usage_count: Option<u32>,
    max_error_score: Option<f64>,
    error_score_decrement: Option<f64>,
    #[serde(default, deserialize_with = "json_int::opt_list")]
    blocked_status_codes: Option<Vec<u16>>,
}

impl SessionSettingsInput {
    /// Fills the gaps from `defaults`; the result is validated.
    ///
    /// # Errors
    /// `invalid_request` naming a field out of range.
    pub fn resolve(self, defaults: &SessionSettings) -> Result<SessionSettings> {
        let settings = SessionSettings {
            max_age_secs: self.max_age_secs.unwrap_or(defaults.max_age_secs),
            max_usage_count: self.max_usage_count.unwrap_or(defaults.max_usage_count),
            max_error_score: self.max_error_score.unwrap_or(defaults.max_error_score),
            error_score_decrement: self.error_score_decrement.unwrap_or(defaults.error_score_decrement),
            blocked_status_codes: match self.blocked_status_codes {
                Some(codes) => Arc::from(codes),
                None => Arc::clone(&defaults.blocked_status_codes),
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Settings given field by field, as a create request carries them at its top level.
    pub fn from_parts(
        max_age_secs: Option<f64>,
        max_usage_count: Option<u32>,
        max_error_score: Option<f64>,
        error_score_decrement: Option<f64>,
        blocked_status_codes: Option<Vec<u16>>,
    ) -> Self {
        Self { max_age_secs, max_usage_count, max_error_score, error_score_decrement, blocked_status_codes }
    }

    /// Whether any field is given.
    pub fn is_empty(&self) -> bool {
        self.max_age_secs.is_none()
            && self.max_usage_count.is_none()
            && self.max_error_score.is_none()
            && self.error_score_decrement.is_none()
            && self.blocked_status_codes.is_none()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolConfigInput {
    #[serde(default, deserialize_with = "json_int::opt")]
    max_pool_size: Option<u32>,
    session: Option<Obj<SessionSettingsInput>>,
    proxy_urls: Option<Vec<String>>,
    proxy_url_template: Option<String>,
}

impl PoolConfigInput {
    /// PUT replaces: a missing field takes the server's default, not the pool's previous value.
    fn resolve(self, defaults: &PoolConfig) -> Result<PoolConfig> {
        let config = PoolConfig {
            max_pool_size: self.max_pool_size.unwrap_or(defaults.max_pool_size),
            session: Arc::new(self.session.map(|Obj(s)| s).unwrap_or_default().resolve(&defaults.session)?),
            proxy_urls: self.proxy_urls.unwrap_or_default(),
            proxy_url_template: self.proxy_url_template,
        };
        config.validate()?;
        Ok(config)
    }
}

/// SessionSettings as responses show them.
#[derive(Debug, Serialize)]
pub struct SettingsView<'a> {
    max_age_secs: f64,
    max_usage_count: u32,
    max_error_score: f64,
    error_score_decrement: f64,
    blocked_status_codes: &'a [u16],
}

impl<'a> From<&'a SessionSettings> for SettingsView<'a> {
    fn from(s: &'a SessionSettings) -> Self {
        Self {
            max_age_secs: s.max_age_secs,
            max_usage_count: s.max_usage_count,
            max_error_score: s.max_error_score,
            error_score_decrement: s.error_score_decrement,
            blocked_status_codes: &s.blocked_status_codes,
        }
    }
}

/// PoolConfig as responses show it.
#[derive(Debug, Serialize)]
pub struct PoolConfigView<'a> {
    max_pool_size: u32,
    session: SettingsView<'a>,
    proxy_urls: &'a [String],
    proxy_url_template: Option<&'a str>,
}

impl<'a> From<&'a PoolConfig> for PoolConfigView<'a> {
    fn from(c: &'a PoolConfig) -> Self {
        Self {
            max_pool_size: c.max_pool_size,
            session: SettingsView::from(&*c.session),
            proxy_urls: &c.proxy_urls,
            proxy_url_template: c.proxy_url_template.as_deref(),
        }
    }
}

/// PoolStatus (API.md).
#[derive(Debug, Serialize)]
pub struct PoolStatus<'a> {
    name: &'a str,
    config: PoolConfigView<'a>,
    session_count: usize,
    usable_session_count: usize,
    retired_session_count: usize,
    leased_session_count: usize,
    created_at: String,
}

impl<'a> PoolStatus<'a> {
    /// The status of `pool` at `now`.
    pub fn of(pool: &'a mut Pool, now: crate::session::Timestamp) -> Self {
        let counts = pool.counts(now);
        let pool: &'a Pool = pool;
        Self {
            name: pool.name(),
            config: PoolConfigView::from(pool.config()),
            session_count: counts.sessions,
            usable_session_count: counts.usable,
            retired_session_count: counts.retired,
            leased_session_count: counts.leased,
            created_at: format_time(pool.created_at()),
        }
    }
}

#[derive(Serialize)]
struct PoolList<'a> {
    pools: Vec<PoolStatus<'a>>,
}

async fn list_pools(State(state): State<AppState>) -> Result<Response> {
    let now = now();
    let mut guards = Vec::new();
    for pool in state.registry.pools() {
        let guard = pool.lock_owned().await;
        guards.push(guard);
    }
    let pools = guards.iter_mut().map(|g| PoolStatus::of(&mut *g, now)).collect();
    Ok(json_response(StatusCode::OK, to_json(&PoolList { pools })?))
}

async fn get_pool(State(state): State<AppState>, AppPath(name): AppPath<String>) -> Result<Response> {
    let name = check_pool_name(&name)?;
    let now = now();
    let mut pool = state.registry.lock(name, false, now).await?;
    Ok(json_response(StatusCode::OK, to_json(&PoolStatus::of(&mut pool, now))?))
}

async fn put_pool(
    State(state): State<AppState>,
    AppPath(name): AppPath<String>,
    AppJson(input): AppJson<PoolConfigInput>,
) -> Result<Response> {
    let name = check_pool_name(&name)?;
    let config = input.resolve(state.registry.defaults())?;
    let now = now();
    let (mut pool, created) = state.registry.put(name, config, now).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, to_json(&PoolStatus::of(&mut pool, now))?))
}

async fn delete_pool(State(state): State<AppState>, AppPath(name): AppPath<String>) -> Result<StatusCode> {
    let name = check_pool_name(&name)?;
    state.registry.delete(name, now()).await?;
    for label in ["usable", "retired", "leased"] {
        metrics::gauge!("session_pool_sessions", "pool" => name.to_owned(), "state" => label).set(0.0);
    }
    Ok(StatusCode::NO_CONTENT)
}
