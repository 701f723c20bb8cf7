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
use crate::metric_names as names;

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
    match state.not_ready() {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(not_ready) => not_ready.into_response(),
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    // The gauges and the retirement counters as of now: the clock is applied to each pool first, so
    // a scrape sees the expiries, lease ends and purges a read of the pool would see.
    let (pools, held) = match state.store.gauges().await {
        Ok(gauges) => gauges,
        Err(e) => return ApiError::from(e).into_response(),
    };
    for (name, counts) in pools {
        for (label, value) in [("usable", counts.usable), ("retired", counts.retired), ("leased", counts.leased)] {
            metrics::gauge!(names::SESSIONS, "pool" => name.clone(), "state" => label).set(value as f64);
        }
    }
    metrics::gauge!(names::SESSIONS_HELD).set(held as f64);
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
        names::SESSIONS,
        "Sessions held, by pool and state: usable, retired, and leased (a subset of usable)."
    );
    describe_gauge!(names::SESSIONS_HELD, "Sessions held by all pools, against --max-sessions.");
    describe_counter!(names::ACQUIRES, "Acquire calls, by pool and result (ok, exhausted).");
    describe_counter!(names::MARKS, "Marks applied, by pool and outcome (good, bad).");
    describe_counter!(names::RETIREMENTS, "Sessions retired, by pool and reason.");
    describe_counter!(names::SESSIONS_CREATED, "Sessions created, by pool.");
    describe_counter!(names::STATUS_CODES, "Status codes reported, by pool and code.");
    describe_histogram!(
        names::ACQUIRE_DURATION,
        Unit::Seconds,
        "Acquire latency inside the service (lock wait included), by pool."
    );
    describe_histogram!(names::PERSIST_DURATION, Unit::Seconds, "Duration of persist cycles that wrote something.");
    describe_counter!(names::PERSIST_SESSIONS_WRITTEN, "Sessions written or removed by persist cycles.");
    describe_counter!(names::PERSIST_BYTES_WRITTEN, Unit::Bytes, "Bytes of records written by persist cycles.");
    describe_counter!(names::PERSIST_ERRORS, "Persist cycles that failed (their changes are retried).");
    describe_counter!(names::LOG_LINES_DROPPED, "Log lines dropped because stdout could not keep up.");
    describe_gauge!(names::CONNECTIONS_OPEN, "HTTP connections open.");
    describe_counter!(names::CONNECTIONS_REFUSED, "HTTP connections closed at once, past --max-connections.");
    describe_counter!(names::HTTP_REQUESTS, "HTTP requests, by method, matched route and status.");
    describe_histogram!(
        names::HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency, by method and matched route."
    );
}

/// The counters without labels, registered at 0 when the recorder is installed, so a scrape lists
/// them before their first event and an alert on `increase()` sees that event. The counters labelled
/// by pool are registered with their pool; those labelled by request or status code, once one is seen.
pub const COUNTERS_AT_ZERO: [&str; 5] = [
    names::PERSIST_SESSIONS_WRITTEN,
    names::PERSIST_BYTES_WRITTEN,
    names::PERSIST_ERRORS,
    names::LOG_LINES_DROPPED,
    names::CONNECTIONS_REFUSED,
];

fn register_at_zero() {
    for name in COUNTERS_AT_ZERO {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(names::CONNECTIONS_OPEN).increment(0.0);
}
