//! The HTTP layer: shared state, the router with its middleware, and the extractors that turn bad
//! input into `invalid_request` problems before a handler runs.
//!
//! One file per resource ([`service`], [`pools`], [`sessions`]), each with its own `router()`; DTOs
//! convert to domain types at this edge, so the core never sees JSON plumbing.

pub mod cookies;
pub mod pools;
pub mod service;
pub mod sessions;
pub mod strict_json;
pub mod transfer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use std::collections::HashMap;

use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{SecondsFormat, SubsecRound, Utc};
use metrics::{Counter, Histogram};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::{ApiError, Result};
use crate::pool::{Registry, RegistryLimits};
use crate::session::Timestamp;
use crate::Config;

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the server takes work: false until the state is restored and again once shutdown began.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl Lifecycle {
    /// Marks the state restored.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks shutdown begun: `/readyz` and `/v1` answer 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Ready and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutting_down.load(Ordering::Acquire)
    }
}

/// Everything a handler reads. Cloned for every request and middleware, so it is one `Arc`: one
/// reference count to touch, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The named pools.
    pub registry: Arc<Registry>,
    /// The server's settings.
    pub config: Arc<Config>,
    /// Readiness and shutdown.
    pub lifecycle: Arc<Lifecycle>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A fresh state with the `default` pool, ready to serve (nothing to restore).
    pub fn new(config: Config) -> Self {
        let state = Self::starting(config);
        state.lifecycle.set_ready();
        state
    }

    /// A fresh state that answers 503 `not_ready` until [`Lifecycle::set_ready`].
    pub fn starting(config: Config) -> Self {
        let limits = RegistryLimits {
            max_pools: config.max_pools,
            max_sessions: config.max_sessions,
            retention: secs_to_delta(config.retired_retention_secs),
        };
        let registry = Registry::new(config.pool_defaults(), limits, now());
        let lifecycle = Lifecycle::default();
        Self(Arc::new(Shared {
            registry: Arc::new(registry),
            config: Arc::new(config),
            lifecycle: Arc::new(lifecycle),
        }))
    }
}

/// The whole application: every route, the 404/405 fallbacks and the middleware stack.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(pools::router())
        .merge(sessions::router())
        .merge(cookies::router())
        .merge(transfer::router())
        .layer(middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .merge(service::router())
        .merge(v1)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
                .layer(middleware::from_fn(observe))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
                .layer(CatchPanicLayer::custom(|_panic| {
                    ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
                })),
        )
        .with_state(state)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gate of `/v1`, in one middleware (each layer costs every request a boxed future):
/// - when API keys are configured, a request needs `Authorization: Bearer KEY` with one of them,
///   else 401 `unauthorized`; keys are compared in constant time, every one of them, so timing tells
///   nothing about which one nearly matched;
/// - until the state is restored and once shutdown has begun, 503 `not_ready`.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.api_key;
    if !keys.is_empty() {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let valid = token.is_some_and(|token| {
            keys.iter()
                .fold(subtle::Choice::from(0), |found, key| found | key.as_bytes().ct_eq(token.as_bytes()))
                .into()
        });
        if !valid {
            return ApiError::Unauthorized.into_response();
        }
    }
    if !state.lifecycle.is_ready() {
        return ApiError::NotReady.into_response();
    }
    next.run(request).await
}

/// Metric handles per (route, method, status), so a request does no label allocation or registry
/// lookup once its kind has been seen. Routes are the router's templates: a bounded set.
#[derive(Default)]
struct HttpMetrics {
    by_route: std::sync::RwLock<HashMap<String, Vec<RouteMetrics>>>,
}

/// The handles of one (method, status) on one route.
type RouteMetrics = (Method, u16, Counter, Histogram);

impl HttpMetrics {
    fn record(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let known = self.by_route.read().unwrap_or_else(|e| e.into_inner()).get(route).and_then(|kinds| {
            kinds.iter().find(|(m, s, ..)| m == method && *s == status).map(|(.., c, h)| (c.clone(), h.clone()))
        });
        let (counter, histogram) = known.unwrap_or_else(|| {
            let (name, method_label) = (route.to_owned(), method.as_str().to_owned());
            let counter = metrics::counter!("http_requests_total", "method" => method_label.clone(),
                "route" => name.clone(), "status" => status.to_string());
            let histogram =
                metrics::histogram!("http_request_duration_seconds", "method" => method_label, "route" => name.clone());
            let mut by_route = self.by_route.write().unwrap_or_else(|e| e.into_inner());
            by_route.entry(name).or_default().push((method.clone(), status, counter.clone(), histogram.clone()));
            (counter, histogram)
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
}

/// One log line and the HTTP metrics per request: method, matched route (never the raw path, which
/// holds ids), status, latency and request id; 5xx other than 503 at error level with the internal
/// cause. No header is logged, so neither keys nor the Authorization header reach a log.
async fn observe(request: Request, next: Next) -> Response {
    static METRICS: std::sync::OnceLock<HttpMetrics> = std::sync::OnceLock::new();
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let request_id = request.headers().get(&REQUEST_ID).cloned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.as_deref().unwrap_or("unmatched");
    METRICS.get_or_init(HttpMetrics::default).record(&method, route, status.as_u16(), elapsed);
    let request_id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // A 503 is the service saying "not now" (no free session, not ready), not a failure.
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        let cause = response.extensions().get::<crate::error::InternalCause>().map_or("", |c| c.0.as_str());
        tracing::error!(%method, route, status = status.as_u16(), latency_ms, request_id, cause, "request failed");
    } else {
        tracing::info!(%method, route, status = status.as_u16(), latency_ms, request_id, "request");
    }
    response
}

/// The server's clock, at millisecond precision (what the API shows).
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

/// RFC 3339 in UTC with a `Z`, with as many fraction digits as the instant has.
pub fn format_time(t: Timestamp) -> String {
    Rfc3339(t).to_string()
}

/// An instant written as RFC 3339 in UTC with a `Z` and 0, 3, 6 or 9 fraction digits, as needed;
/// serialized without an intermediate `String` (a session answer holds up to five of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub Timestamp);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        if !(0..=9999).contains(&t.year()) {
            return f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        // A leap second shows as :60 with the nanoseconds past it, as chrono writes it.
        let nanos = t.nanosecond() % 1_000_000_000;
        let seconds = if t.nanosecond() >= 1_000_000_000 { 60 } else { t.second() };
        if seconds == 60 {
            return f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        match nanos {
            0 => {}
            n if n % 1_000_000 == 0 => write!(f, ".{:03}", n / 1_000_000)?,
            n if n % 1_000 == 0 => write!(f, ".{:06}", n / 1_000)?,
            n => write!(f, ".{n:09}")?,
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Seconds (fractions allowed) as a duration; callers validate the range first.
pub fn secs_to_delta(secs: f64) -> chrono::TimeDelta {
    chrono::TimeDelta::nanoseconds((secs * 1e9).round() as i64)
}

/// A JSON body parsed strictly: unknown fields, duplicate keys, numbers out of range and nesting past
/// 128 levels are `invalid_request`; an empty body means `{}` (all defaults); a non-empty body that
/// is not `application/json` is 415; one over `--max-body-bytes` is 413.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let is_json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json_media_type);
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.config.max_body_bytes)
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })?;
        let body: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => b"{}",
            Some(_) if !is_json => return Err(ApiError::UnsupportedMediaType),
            Some(b'{') => &bytes,
            Some(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        };
        strict_json::from_slice(body).map(AppJson).map_err(ApiError::InvalidRequest)
    }
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Path parameters, with rejections as `invalid_request`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// Query parameters, with rejections as `invalid_request`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid(format!("bad path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(format!("bad query string: {}", rejection.body_text()))
    }
}

/// Checks a pool name against `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
///
/// # Errors
/// `invalid_request` naming the value.
pub fn check_pool_name(name: &str) -> Result<&str> {
    let mut chars = name.chars();
    let valid = name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(ApiError::invalid(format!("pool name {name:?} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$")))
    }
}

/// Checks a session id against `^[A-Za-z0-9._~-]{1,128}$`.
///
/// # Errors
/// `invalid_request` naming the value.
pub fn check_session_id(id: &str) -> Result<&str> {
    let valid = (1..=128).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
    if valid {
        Ok(id)
    } else {
        Err(ApiError::invalid(format!("session id {id:?} must match ^[A-Za-z0-9._~-]{{1,128}}$")))
    }
}

/// A 200 (or other) answer whose JSON was serialized while the pool was locked.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serializes a view to JSON bytes.
///
/// # Errors
/// `Internal` if serialization fails (it cannot for these types).
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    // A session answer is 500-1000 bytes: one allocation instead of serde_json's 128-byte start and
    // three regrowths.
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(check_pool_name("www.example.com").is_ok());
        assert!(check_pool_name("a").is_ok());
        assert!(check_pool_name("-bad").is_err());
        assert!(check_pool_name("").is_err());
        assert!(check_pool_name(&"a".repeat(129)).is_err());
        assert!(check_pool_name(&"a".repeat(128)).is_ok());
        assert!(check_session_id("s~1.x_y-z").is_ok());
        assert!(check_session_id("has space").is_err());
        assert!(check_session_id("").is_err());
        assert!(check_session_id("é").is_err());
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 25, 19, 0, 0).unwrap(),
            Utc.timestamp_opt(1_764_097_200, 123_000_000).unwrap(),
            Utc.timestamp_opt(1_764_097_200, 123_456_000).unwrap(),
            Utc.timestamp_opt(1_764_097_200, 123_456_789).unwrap(),
            Utc.timestamp_opt(5, 1).unwrap(),
            chrono::DateTime::<Utc>::MAX_UTC,
        ] {
            assert_eq!(Rfc3339(t).to_string(), t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
    }
}
