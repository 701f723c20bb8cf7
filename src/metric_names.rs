//! The name of every metric the service exports. The code that records a metric and the
//! descriptions `/metrics` serves (`api::service`) both use these, so a renamed metric cannot lose
//! its HELP line or be recorded under two spellings. What each one means is in `docs/semantics.md`.

/// Gauge: sessions held, by pool and state (usable, retired, leased).
pub const SESSIONS: &str = "session_pool_sessions";
/// Gauge: sessions held by all pools together.
pub const SESSIONS_HELD: &str = "session_pool_sessions_held";
/// Counter: acquire calls, by pool and result.
pub const ACQUIRES: &str = "session_pool_acquires_total";
/// Counter: marks applied, by pool and outcome.
pub const MARKS: &str = "session_pool_marks_total";
/// Counter: sessions retired, by pool and reason.
pub const RETIREMENTS: &str = "session_pool_retirements_total";
/// Counter: sessions created, by pool.
pub const SESSIONS_CREATED: &str = "session_pool_sessions_created_total";
/// Counter: status codes reported, by pool and code.
pub const STATUS_CODES: &str = "session_pool_status_codes_total";
/// Histogram: acquire latency inside the service, by pool.
pub const ACQUIRE_DURATION: &str = "session_pool_acquire_duration_seconds";
/// Histogram: duration of persist cycles that wrote something.
pub const PERSIST_DURATION: &str = "session_pool_persist_duration_seconds";
/// Counter: sessions written or removed by persist cycles.
pub const PERSIST_SESSIONS_WRITTEN: &str = "session_pool_persist_sessions_written_total";
/// Counter: bytes of records written by persist cycles.
pub const PERSIST_BYTES_WRITTEN: &str = "session_pool_persist_bytes_written_total";
/// Counter: persist cycles that failed.
pub const PERSIST_ERRORS: &str = "session_pool_persist_errors_total";
/// Counter: log lines dropped because stdout could not keep up.
pub const LOG_LINES_DROPPED: &str = "session_pool_log_lines_dropped_total";
/// Gauge: HTTP connections open.
pub const CONNECTIONS_OPEN: &str = "session_pool_http_connections_open";
/// Counter: HTTP connections closed at once past `--max-connections`.
pub const CONNECTIONS_REFUSED: &str = "session_pool_http_connections_refused_total";
/// Counter: HTTP requests, by method, matched route and status.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Histogram: HTTP request latency, by method and matched route.
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
