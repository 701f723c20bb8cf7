//! `/v1/pools/{pool}/export` and `/v1/pools/{pool}/import`: moving pools in and out, in this
//! service's own lossless form and in Crawlee's persisted forms.
//!
//! Export serializes the pool under its lock: the own form is exactly the PoolConfig and Session
//! objects the rest of the API answers (without leases), the Crawlee form comes from
//! [`crate::interop`]. Import is all or nothing: the whole document is parsed and checked before any
//! pool is created or locked; the budget of `--max-sessions` is checked before the first session
//! goes in, and should another request take the last places meanwhile, what went in is taken out
//! again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pools::PoolConfigView;
use super::sessions::SessionView;
use super::{check_pool_name, check_session_id, json_response, now, to_json, AppJson, AppPath, AppQuery, AppState};
use crate::error::{ApiError, Result};
use crate::interop::{self, ImportDocument, ImportedSession};
use crate::pool::{Pool, PoolError, PoolGuard};
use crate::session::{Session, SessionId, SessionSettings, Timestamp};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/pools/{pool}/export", get(export_pool)).route("/v1/pools/{pool}/import", post(import_pool))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
}

/// `{"config": PoolConfig, "sessions": [Session...]}`, streamed from the locked pool into the
/// response body without building an intermediate list.
struct OwnExport<'a> {
    pool: &'a Pool,
    name: &'a str,
    now: Timestamp,
}

impl Serialize for OwnExport<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("config", &PoolConfigView::from(self.pool.config()))?;
        map.serialize_entry("sessions", &ExportedSessions(self))?;
        map.end()
    }
}

struct ExportedSessions<'a>(&'a OwnExport<'a>);

impl Serialize for ExportedSessions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let OwnExport { pool, name, now } = *self.0;
        serializer.collect_seq(pool.sessions().map(|session| ExportedSession { session, name, now }))
    }
}

/// One Session object as the API shows it, but without its lease: leases are not exported.
struct ExportedSession<'a> {
    session: &'a Session,
    name: &'a str,
    now: Timestamp,
}

impl Serialize for ExportedSession<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if self.session.lease.is_some() {
            let unleased = Session { lease: None, ..self.session.clone() };
            SessionView::of(&unleased, self.name, self.now).serialize(serializer)
        } else {
            SessionView::of(self.session, self.name, self.now).serialize(serializer)
        }
    }
}

#[derive(Serialize)]
struct Skipped<'a> {
    id: &'a str,
    reason: &'static str,
}

#[derive(Serialize)]
struct ImportAnswer<'a> {
    imported: usize,
    skipped: Vec<Skipped<'a>>,
}

async fn export_pool(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppQuery(query): AppQuery<ExportQuery>,
) -> Result<Response> {
    let name = check_pool_name(&pool)?;
    let crawlee = match query.format.as_deref() {
        None => false,
        Some("crawlee") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format: {other:?} is not a known format; use \"crawlee\", or leave it out for this service's own form"
            )));
        }
    };
    let now = now();
    let mut guard = state.registry.lock(name, false, now).await?;
    guard.tick(now);
    let body = if crawlee {
        to_json(&interop::crawlee_pool_state(guard.config(), guard.sessions(), now))?
    } else {
        to_json(&OwnExport { pool: &guard, name, now })?
    };
    drop(guard);
    Ok(json_response(StatusCode::OK, body))
}

async fn import_pool(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppJson(body): AppJson<Value>,
) -> Result<Response> {
    let name = check_pool_name(&pool)?;
    let large = body.get("sessions").and_then(Value::as_array).is_some_and(|s| s.len() > LARGE_IMPORT);
    let ImportDocument { format, pool_config, sessions } = super::off_the_runtime_if(large, || {
        let document = interop::parse_import(body, state.registry.defaults()).map_err(|e| ApiError::invalid(e.0))?;
        for (index, session) in document.sessions.iter().enumerate() {
            check_session_id(&session.id).map_err(|e| ApiError::invalid(format!("sessions[{index}]: {e}")))?;
        }
        Ok::<_, ApiError>(document)
    })?;

    state.registry.make_room(sessions.len(), now()).await;
    let now = now();
    let (mut guard, created) = match state.registry.lock(name, false, now).await {
        Ok(guard) => (guard, false),
        Err(PoolError::PoolNotFound(_)) => {
            check_budget(&state, sessions.len())?;
            state.registry.lock_or_create(name, pool_config, now).await?
        }
        Err(e) => return Err(e.into()),
    };
    guard.tick(now);
    let (fresh, existing): (Vec<ImportedSession>, Vec<ImportedSession>) =
        sessions.into_iter().partition(|session| !guard.contains(&session.id));
    check_budget(&state, fresh.len())?;
    let imported = super::off_the_runtime_if(large, || adopt_all(&mut guard, fresh, now))?;
    let skipped = existing.iter().map(|session| Skipped { id: &session.id, reason: "exists" }).collect();
    let body = to_json(&ImportAnswer { imported, skipped })?;
    drop(guard);
    tracing::debug!(pool = name, format = format.as_str(), imported, created, "import");
    Ok(json_response(StatusCode::OK, body))
}

/// An import of more sessions than this runs off the runtime's worker.
const LARGE_IMPORT: usize = 10_000;

/// 409 `limit_reached` when `wanted` more sessions would pass `--max-sessions`.
fn check_budget(state: &AppState, wanted: usize) -> Result<()> {
    let left = state.registry.sessions_left();
    if wanted > left {
        return Err(ApiError::LimitReached(format!(
            "importing {wanted} sessions would pass --max-sessions ({left} more allowed); nothing was imported"
        )));
    }
    Ok(())
}

/// Puts every session in the pool with its settings resolved over the pool's. Should one not go in
/// (another request took the last places of `--max-sessions` since the check), the ones already in
/// are taken out again, so the import changes nothing. Returns how many went in.
fn adopt_all(pool: &mut PoolGuard, sessions: Vec<ImportedSession>, now: Timestamp) -> Result<usize> {
    let base = Arc::clone(&pool.config().session);
    let mut shared = SharedSettings::new(Arc::clone(&base));
    let mut adopted: Vec<SessionId> = Vec::with_capacity(sessions.len());
    for imported in sessions {
        let outcome = imported
            .settings
            .resolve(&base)
            .map_err(ApiError::from)
            .map(|settings| imported.into_session(shared.get(settings), now))
            .and_then(|session| {
                let id = session.id.clone();
                pool.adopt(session, true, now).map(|()| id).map_err(ApiError::from)
            });
        match outcome {
            Ok(id) => adopted.push(id),
            Err(e) => {
                for id in &adopted {
                    let _ = pool.delete(id, now);
                }
                return Err(e);
            }
        }
    }
    Ok(adopted.len())
}

/// Hands out one `Arc` per distinct settings seen recently, so a million imported sessions with the
/// pool's (or each other's) settings share them instead of holding a million copies.
struct SharedSettings {
    recent: Vec<Arc<SessionSettings>>,
}

impl SharedSettings {
    const KEEP: usize = 8;

    fn new(pool: Arc<SessionSettings>) -> Self {
        Self { recent: vec![pool] }
    }

    fn get(&mut self, settings: SessionSettings) -> Arc<SessionSettings> {
        if let Some(known) = self.recent.iter().find(|known| ***known == settings) {
            return Arc::clone(known);
        }
        let new = Arc::new(settings);
        if self.recent.len() >= Self::KEEP {
            self.recent.remove(1);
        }
        self.recent.push(Arc::clone(&new));
        new
    }
}
