//! The service endpoints that never need an API key: health, readiness, metrics and the spec.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::logging::DROPPED_LINES;
use crate::serve::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED};

/// The OpenAPI document of this build, embedded from the repository root.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.yaml", get(openapi))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.lifecycle.is_ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::NotReady.into_response()
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    // The gauges and the retirement counters as of now: the clock is applied to each pool first, so
    // a scrape sees the expiries, lease ends and purges a read of the pool would see.
    let now = super::now();
    for pool in state.registry.pools() {
        let mut pool = pool.lock().await;
        let counts = pool.counts(now);
        let name = pool.name().to_owned();
        for (label, value) in [("usable", counts.usable), ("retired", counts.retired), ("leased", counts.leased)] {
            metrics::gauge!("session_pool_sessions", "pool" => name.clone(), "state" => label).set(value as f64);
        }
    }
    metrics::gauge!("session_pool_sessions_held").set(state.registry.sessions_held() as f64);
    crate::logging::export_dropped();
    let handle = metrics_handle();
    handle.run_upkeep();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// The process-wide Prometheus recorder, installed on first use. Several apps in one process (tests)
/// share it, which is what a global recorder means.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed already; then this handle renders nothing,
        // and the other recorder is the one the process chose.
        let _ = metrics::set_global_recorder(recorder);
        describe_metrics();
        register_at_zero();
        handle
    })
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "session_pool_sessions",
        "Sessions held, by pool and state: usable, retired, and leased (a subset of usable)."
    );
    describe_gauge!("session_pool_sessions_held", "Sessions held by all pools, against --max-sessions.");
    describe_counter!("session_pool_acquires_total", "Acquire calls, by pool and result (ok, exhausted).");
    describe_counter!("session_pool_marks_total", "Marks applied, by pool and outcome (good, bad).");
    describe_counter!("session_pool_retirements_total", "Sessions retired, by pool and reason.");
    describe_counter!("session_pool_sessions_created_total", "Sessions created, by pool.");
    describe_counter!("session_pool_status_codes_total", "Status codes reported, by pool and code.");
    describe_histogram!(
        "session_pool_acquire_duration_seconds",
        Unit::Seconds,
        "Acquire latency inside the service (lock wait included), by pool."
    );
    describe_histogram!(
        "session_pool_persist_duration_seconds",
        Unit::Seconds,
        "Duration of persist cycles that wrote something."
    );
    describe_counter!("session_pool_persist_sessions_written_total", "Sessions written or removed by persist cycles.");
    describe_counter!(
        "session_pool_persist_bytes_written_total",
        Unit::Bytes,
        "Bytes of records written by persist cycles."
    );
    describe_counter!("session_pool_persist_errors_total", "Persist cycles that failed (their changes are retried).");
    describe_counter!(DROPPED_LINES, "Log lines dropped because stdout could not keep up.");
    describe_gauge!(CONNECTIONS_OPEN, "HTTP connections open.");
    describe_counter!(CONNECTIONS_REFUSED, "HTTP connections closed at once, past --max-connections.");
    describe_counter!("http_requests_total", "HTTP requests, by method, matched route and status.");
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and matched route."
    );
}

/// The counters without labels, registered at 0 when the recorder is installed, so a scrape lists
/// them before their first event and an alert on `increase()` sees that event. The counters labelled
/// by pool are registered with their pool; those labelled by request or status code, once one is seen.
pub const COUNTERS_AT_ZERO: [&str; 5] = [
    "session_pool_persist_sessions_written_total",
    "session_pool_persist_bytes_written_total",
    "session_pool_persist_errors_total",
    DROPPED_LINES,
    CONNECTIONS_REFUSED,
];

fn register_at_zero() {
    for name in COUNTERS_AT_ZERO {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(CONNECTIONS_OPEN).increment(0.0);
}
