//! What every request passes through around its handler: one stack, applied once to every route and
//! the fallbacks ([`wrap`]).
//!
//! tower-http does the generic parts: `Authorization` is marked sensitive, so nothing that prints
//! headers shows a key; `x-request-id` is taken from the request or generated (a UUID v4) and set on
//! the answer; the trace layer times the request and hands the answer to `record`, which writes the
//! access log line and the HTTP metrics. A panic in a handler is a 500 `internal_error`. Ours is only
//! the gate ([`admit`]): API keys and readiness, which no library knows.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::AppState;
use crate::error::{ApiError, InternalCause};
use crate::metric_names as names;

/// The target of the per-request log lines. A request that failed on the server (a 5xx other than
/// 503) logs an error; every other request logs at debug, as tower-http's `TraceLayer` does by
/// default, so the default level (`info`) shows what needs attention and the metrics count the rest.
/// `RUST_LOG=info,session_pool::access=debug` turns on a line per request.
pub const ACCESS_TARGET: &str = "session_pool::access";

/// The request id header: taken from the request when it has one, generated otherwise, and set on
/// the answer either way.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `router` inside the middleware stack, outermost first: sensitive headers, request id, the trace
/// layer (access log and metrics), the gate, the panic catcher. One `layer` call, so each route is
/// wrapped once.
pub fn wrap(router: Router<AppState>, state: AppState) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
            .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(Span::none())
                    .on_request(())
                    .on_response(record)
                    .on_eos(())
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
            .layer(axum::middleware::from_fn_with_state(state, admit))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
            })),
    )
}

/// What the access log and the metrics say a request was: its method and the route template it
/// matched (never the raw path, which holds ids). [`admit`] puts it on the answer for `record`.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    route: Option<MatchedPath>,
}

impl Seen {
    fn of(request: &Request) -> Self {
        Self { method: method_label(request.method()), route: request.extensions().get::<MatchedPath>().cloned() }
    }

    fn route_label(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

/// The gate of every request under `/v1`, by its raw path, so it covers unknown paths too (an
/// unknown `/v1` path answers 404 only to a client that may see it):
/// - when API keys are configured, a request needs `Authorization: Bearer KEY` with one of them,
///   else 401 `unauthorized`; every key is compared in constant time, so timing tells nothing about
///   which one nearly matched;
/// - until the state is restored, once shutdown has begun, and while the store cannot be reached,
///   503 `not_ready`.
pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let seen = Seen::of(&request);
    let mut response = match refusal(&state, &request) {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    };
    response.extensions_mut().insert(seen);
    response
}

fn refusal(state: &AppState, request: &Request) -> Option<ApiError> {
    let path = request.uri().path();
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return None;
    }
    let keys = &state.config.api_key;
    if !keys.is_empty() {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are `Bearer`.
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
            .map(|(_, token)| token.trim());
        // Every key is compared, each in time that does not depend on where the bytes differ. A
        // comparison with a key of another length ends at once, so timing can tell a key's length,
        // never its bytes; keys are meant to be long random tokens, whose length is no secret.
        let valid = token.is_some_and(|token| {
            keys.iter()
                .fold(subtle::Choice::from(0), |found, key| found | key.as_bytes().ct_eq(token.as_bytes()))
                .into()
        });
        if !valid {
            return Some(ApiError::Unauthorized);
        }
    }
    state.not_ready()
}

/// The access log line and the HTTP metrics of one answer: method, matched route, status, latency
/// and request id; a 5xx other than 503 at error level with its internal cause, anything else at
/// debug. No header is logged.
fn record(response: &Response, latency: Duration, _: &Span) {
    let (method, route) =
        response.extensions().get::<Seen>().map_or(("other", "unmatched"), |s| (s.method, s.route_label()));
    let status = response.status();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method, "route" => route.to_owned(),
        "status" => status.as_str().to_owned())
    .increment(1);
    metrics::histogram!(names::HTTP_REQUEST_DURATION, "method" => method, "route" => route.to_owned())
        .record(latency.as_secs_f64());
    let request_id = response.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let latency_ms = latency.as_secs_f64() * 1000.0;
    // A 503 is the service saying "not now" (no free session, not ready), not a failure. The method
    // and the route are ours and written as they are; the client's request id and the cause are
    // quoted in text lines, so they cannot pose as other fields.
    let failed = status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE;
    let status = status.as_u16();
    if failed {
        let cause = response.extensions().get::<InternalCause>().map_or("", |c| c.0.as_str());
        tracing::error!(target: ACCESS_TARGET, %method, %route, status, latency_ms, request_id, cause, "request failed");
    } else {
        tracing::debug!(target: ACCESS_TARGET, %method, %route, status, latency_ms, request_id, "request");
    }
}

/// The method as a metric label: its name when it is a standard method, `other` for any extension
/// method a client makes up (each would otherwise be a series of its own).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
    use tracing_subscriber::Layer as _;

    use super::*;

    /// What the tests read of an event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Event {
        level: tracing::Level,
        target: String,
        message: String,
        fields: Vec<(String, String)>,
    }

    type Seen = Arc<Mutex<Vec<Event>>>;

    struct Capture(Seen);

    #[derive(Default)]
    struct Fields {
        message: String,
        fields: Vec<(String, String)>,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.message = format!("{value:?}");
            } else {
                self.fields.push((field.name().to_owned(), format!("{value:?}")));
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let meta = event.metadata();
            self.0.lock().unwrap().push(Event {
                level: *meta.level(),
                target: meta.target().to_owned(),
                message: fields.message,
                fields: fields.fields,
            });
        }
    }

    /// The events logged while serving one request to `path` (with `headers`), with the subscriber
    /// filtered at `level`, and the answer.
    async fn events_for(
        path: &str,
        headers: &[(&str, &str)],
        level: tracing::level_filters::LevelFilter,
    ) -> (Vec<Event>, Response) {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&seen)).with_filter(level));
        let _guard = tracing::subscriber::set_default(subscriber);
        let state = AppState::new(crate::Config { api_key: vec!["key".into()], ..crate::Config::default() });
        let routes = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/v1/ok/{id}", get(|| async { "ok" }))
            .route("/panic", get(panics));
        let app = wrap(routes, state.clone()).with_state(state);
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let events = seen.lock().unwrap().clone();
        (events, response)
    }

    async fn panics() -> &'static str {
        panic!("on purpose")
    }

    fn field<'a>(event: &'a Event, name: &str) -> &'a str {
        event.fields.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn routine_requests_log_at_debug_under_the_access_target() {
        use tracing::level_filters::LevelFilter;
        for (path, status) in [("/ok", "200"), ("/busy", "503"), ("/missing", "404")] {
            let (events, _) = events_for(path, &[], LevelFilter::DEBUG).await;
            assert_eq!(events.len(), 1, "{path}: {events:?}");
            let event = &events[0];
            assert_eq!(
                (event.level, event.target.as_str(), event.message.as_str()),
                (tracing::Level::DEBUG, ACCESS_TARGET, "request")
            );
            assert_eq!(field(event, "status"), status, "{path}");
            assert!(events_for(path, &[], LevelFilter::INFO).await.0.is_empty(), "{path} logged at info");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_line_names_the_method_the_route_template_and_the_request_id() {
        let headers = [("x-request-id", "trace-7"), ("authorization", "Bearer key")];
        let (events, response) = events_for("/v1/ok/abc", &headers, tracing::level_filters::LevelFilter::DEBUG).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[&REQUEST_ID], "trace-7");
        let event = &events[0];
        assert_eq!(field(event, "method"), "GET");
        assert_eq!(field(event, "route"), "/v1/ok/{id}");
        assert_eq!(field(event, "request_id"), "\"trace-7\"");
        assert!(field(event, "latency_ms").parse::<f64>().is_ok_and(|ms| ms >= 0.0), "{event:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn server_failures_and_panics_log_an_error_at_the_default_level() {
        for path in ["/fail", "/panic"] {
            let (events, response) = events_for(path, &[], tracing::level_filters::LevelFilter::INFO).await;
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            assert!(response.headers().contains_key(&REQUEST_ID), "{path}");
            assert_eq!(events.len(), 1, "{path}: {events:?}");
            assert_eq!((events[0].level, events[0].message.as_str()), (tracing::Level::ERROR, "request failed"));
            assert_eq!(field(&events[0], "route"), path);
        }
        let (events, _) = events_for("/panic", &[], tracing::level_filters::LevelFilter::INFO).await;
        assert!(field(&events[0], "cause").contains("panicked"), "{events:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_gate_takes_a_bearer_key_in_any_case_and_only_under_v1() {
        use tracing::level_filters::LevelFilter;
        for (authorization, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("Bearer key"), StatusCode::OK),
            (Some("bEARER key"), StatusCode::OK),
            (Some("Bearer  key "), StatusCode::OK),
            (Some("Bearer kex"), StatusCode::UNAUTHORIZED),
            (Some("Bearer ke"), StatusCode::UNAUTHORIZED),
            (Some("Basic key"), StatusCode::UNAUTHORIZED),
            (Some("key"), StatusCode::UNAUTHORIZED),
        ] {
            let headers: Vec<_> = authorization.iter().map(|a| ("authorization", *a)).collect();
            let (_, response) = events_for("/v1/ok/x", &headers, LevelFilter::OFF).await;
            assert_eq!(response.status(), status, "{authorization:?}");
        }
        let (_, response) = events_for("/v1/missing", &[], LevelFilter::OFF).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "an unknown /v1 path is gated too");
        let (_, response) = events_for("/ok", &[], LevelFilter::OFF).await;
        assert_eq!(response.status(), StatusCode::OK, "paths outside /v1 are open");
    }
}
