//! `/v1/pools/{pool}/export` and `/v1/pools/{pool}/import`: moving pools in and out, in this
//! service's own lossless form and in Crawlee's persisted forms.
//!
//! Export serializes the pool as the store hands it over (the memory store, under the pool's lock):
//! the own form is exactly the PoolConfig and Session objects the rest of the API answers (without
//! leases), the Crawlee form comes from [`crate::interop`]. Import is all or nothing: the whole
//! document is parsed and checked before the store is called, which then puts the sessions in, or
//! none ([`crate::store::Store::import`]).

use std::cell::RefCell;
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
use super::{check_pool_name, check_session_id, json_response, AppJson, AppPath, AppQuery, AppState};
use crate::error::{ApiError, Result};
use crate::interop::{self, ImportDocument, ImportedSession};
use crate::pool::{Imported, Incoming, PoolConfig};
use crate::session::{self, Session, SessionSettings, Timestamp};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/pools/{pool}/export", get(export_pool)).route("/v1/pools/{pool}/import", post(import_pool))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
}

/// `{"config": PoolConfig, "sessions": [Session...]}`, streamed from the store into the response
/// body without building an intermediate list.
struct OwnExport<'a, 's> {
    config: &'a PoolConfig,
    /// Taken as the `sessions` array is written (`Serialize` gets `&self`); it is written once.
    sessions: RefCell<&'a mut dyn Iterator<Item = &'s Session>>,
    name: &'a str,
    now: Timestamp,
}

impl Serialize for OwnExport<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("config", &PoolConfigView::from(self.config))?;
        map.serialize_entry("sessions", &ExportedSessions(self))?;
        map.end()
    }
}

struct ExportedSessions<'e, 'a, 's>(&'e OwnExport<'a, 's>);

impl Serialize for ExportedSessions<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let OwnExport { sessions, name, now, .. } = self.0;
        let mut sessions = sessions.borrow_mut();
        serializer.collect_seq((&mut **sessions).map(|session| ExportedSession { session, name, now: *now }))
    }
}

/// The own export form of a pool as a JSON value, written by the serializer the export handler
/// uses (for `session-pool migrate`, which reads it back with [`interop::parse_import`]).
pub(crate) fn own_export_value(
    config: &PoolConfig,
    sessions: &mut dyn Iterator<Item = &Session>,
    name: &str,
    now: Timestamp,
) -> serde_json::Result<Value> {
    serde_json::to_value(OwnExport { config, sessions: RefCell::new(sessions), name, now })
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
    let answer = |config: &PoolConfig, sessions: &mut dyn Iterator<Item = &Session>, now| {
        if crawlee {
            json_response(StatusCode::OK, &interop::crawlee_pool_state(config, sessions, now))
        } else {
            json_response(StatusCode::OK, &OwnExport { config, sessions: RefCell::new(sessions), name, now })
        }
    };
    state.store.export(name, answer).await?
}

async fn import_pool(
    State(state): State<AppState>,
    AppPath(pool): AppPath<String>,
    AppJson(body): AppJson<Value>,
) -> Result<Response> {
    let name = check_pool_name(&pool)?;
    let large = body.get("sessions").and_then(Value::as_array).is_some_and(|s| s.len() > LARGE_IMPORT);
    let ImportDocument { format, pool_config, sessions } = super::off_the_runtime_if(large, || {
        let document = interop::parse_import(body, state.store.defaults()).map_err(|e| ApiError::invalid(e.0))?;
        for (index, session) in document.sessions.iter().enumerate() {
            check_session_id(&session.id).map_err(|e| ApiError::invalid(format!("sessions[{index}]: {e}")))?;
        }
        Ok::<_, ApiError>(document)
    })?;

    let (Imported { imported, skipped }, created) = state.store.import(name, pool_config, sessions).await?;
    let skipped = skipped.iter().map(|session| Skipped { id: &session.id, reason: "exists" }).collect();
    tracing::debug!(pool = name, format = format.as_str(), imported, created, "import");
    json_response(StatusCode::OK, &ImportAnswer { imported, skipped })
}

/// An import document with more sessions than this is parsed off the runtime's worker.
const LARGE_IMPORT: usize = 10_000;

impl Incoming for ImportedSession {
    fn id(&self) -> &str {
        &self.id
    }

    fn settings(&self, base: &SessionSettings) -> std::result::Result<SessionSettings, session::Error> {
        self.settings.resolve(base)
    }

    fn into_session(self, settings: Arc<SessionSettings>, now: Timestamp) -> Session {
        ImportedSession::into_session(self, settings, now)
    }
}
