//! `/v1/pools`: create, reconfigure, read and delete named pools.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::{check_pool_name, json_response, AppJson, AppPath, AppState};
use crate::clock::Rfc3339;
use crate::error::Result;
use crate::metric_names as names;
use crate::pool::{PoolConfig, PoolConfigPatch};
use crate::session::SessionSettings;
use crate::store::PoolInfo;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pools", get(list_pools))
        .route("/v1/pools/{pool}", get(get_pool).put(put_pool).delete(delete_pool))
}

/// PoolConfig as responses show it.
#[derive(Debug, Serialize)]
pub struct PoolConfigView<'a> {
    max_pool_size: u32,
    session: &'a SessionSettings,
    proxy_urls: &'a [String],
    proxy_url_template: Option<&'a str>,
}

impl<'a> From<&'a PoolConfig> for PoolConfigView<'a> {
    fn from(c: &'a PoolConfig) -> Self {
        Self {
            max_pool_size: c.max_pool_size,
            session: &c.session,
            proxy_urls: &c.proxy_urls,
            proxy_url_template: c.proxy_url_template.as_deref(),
        }
    }
}

/// PoolStatus (openapi.yaml).
#[derive(Debug, Serialize)]
pub struct PoolStatus<'a> {
    name: &'a str,
    config: PoolConfigView<'a>,
    session_count: usize,
    usable_session_count: usize,
    retired_session_count: usize,
    leased_session_count: usize,
    created_at: Rfc3339,
}

impl<'a> PoolStatus<'a> {
    /// The status of the pool `info` describes.
    pub fn of(info: &'a PoolInfo) -> Self {
        let counts = &info.counts;
        Self {
            name: &info.name,
            config: PoolConfigView::from(&info.config),
            session_count: counts.sessions,
            usable_session_count: counts.usable,
            retired_session_count: counts.retired,
            leased_session_count: counts.leased,
            created_at: Rfc3339(info.created_at),
        }
    }
}

#[derive(Serialize)]
struct PoolList<'a> {
    pools: Vec<PoolStatus<'a>>,
}

async fn list_pools(State(state): State<AppState>) -> Result<Response> {
    let pools = state.store.pools().await?;
    json_response(StatusCode::OK, &PoolList { pools: pools.iter().map(PoolStatus::of).collect() })
}

async fn get_pool(State(state): State<AppState>, AppPath(name): AppPath<String>) -> Result<Response> {
    let name = check_pool_name(&name)?;
    let pool = state.store.pool(name).await?;
    json_response(StatusCode::OK, &PoolStatus::of(&pool))
}

async fn put_pool(
    State(state): State<AppState>,
    AppPath(name): AppPath<String>,
    AppJson(patch): AppJson<PoolConfigPatch>,
) -> Result<Response> {
    let name = check_pool_name(&name)?;
    let config = patch.resolve(state.store.defaults())?;
    let (pool, created) = state.store.put_pool(name, config).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    json_response(status, &PoolStatus::of(&pool))
}

async fn delete_pool(State(state): State<AppState>, AppPath(name): AppPath<String>) -> Result<StatusCode> {
    let name = check_pool_name(&name)?;
    state.store.delete_pool(name).await?;
    for label in ["usable", "retired", "leased"] {
        metrics::gauge!(names::SESSIONS, "pool" => name.to_owned(), "state" => label).set(0.0);
    }
    Ok(StatusCode::NO_CONTENT)
}
