//! What every request passes through around its handler, as two hand-written tower services:
//! [`Observe`] (request id, the log line and the HTTP metrics) around every route, and [`Admit`]
//! (API keys and readiness) around `/v1`.
//!
//! They were `axum::middleware::from_fn` functions plus tower-http's request-id and sensitive-header
//! layers. Each `from_fn` boxes a future and clones the service it wraps on every request; under load
//! the stack of five layers cost more than the acquire handler itself. These services do the same
//! work with futures that are plain structs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{self as http, header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};
use uuid::Uuid;

use super::AppState;
use crate::error::ApiError;

/// The target of the per-request log lines. A request that failed on the server (a 5xx other than
/// 503) logs an error; every other request logs at debug, as tower-http's `TraceLayer` does, so the
/// default level (`info`) shows what needs attention and the metrics count the rest.
/// `RUST_LOG=info,session_pool::access=debug` turns on a line per request.
pub const ACCESS_TARGET: &str = "session_pool::access";

/// The request id header: taken from the request when it has one, generated otherwise, and set on
/// the response either way.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Layer of [`Observe`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer {
    route: Option<&'static str>,
}

impl ObserveLayer {
    /// For a service that serves one route and is reached without the router (which would record
    /// the matched route in the request): its requests are labelled `route`.
    pub fn fixed(route: &'static str) -> Self {
        Self { route: Some(route) }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, route: self.route }
    }
}

/// One log line and the HTTP metrics per request: method, matched route (never the raw path, which
/// holds ids), status, latency and request id; 5xx other than 503 at error level with the internal
/// cause. No header is logged, and `Authorization` is marked sensitive for anything that prints
/// headers, so neither keys nor tokens reach a log.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    /// The route label of every request, when fixed; else the router's matched route.
    route: Option<&'static str>,
}

impl<S, B> Service<Request> for Observe<S>
where
    S: Service<Request, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let headers = request.headers_mut();
        if let header::Entry::Occupied(mut authorization) = headers.entry(header::AUTHORIZATION) {
            authorization.iter_mut().for_each(|value| value.set_sensitive(true));
        }
        let request_id = headers.get(&REQUEST_ID).cloned().unwrap_or_else(new_request_id);
        let method = request.method().clone();
        let route = match self.route {
            Some(route) => Some(RouteLabel::Fixed(route)),
            None => request.extensions().get::<MatchedPath>().cloned().map(RouteLabel::Matched),
        };
        ObserveFuture { inner: self.inner.call(request), seen: Some(Seen { started, method, route, request_id }) }
    }
}

/// A fresh UUID v4 as a header value, without an intermediate `String`.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// What [`Observe`] remembers of a request until its response.
#[derive(Debug)]
struct Seen {
    started: Instant,
    method: Method,
    route: Option<RouteLabel>,
    request_id: HeaderValue,
}

/// The route template a request matched.
#[derive(Debug)]
enum RouteLabel {
    /// As the router recorded it.
    Matched(MatchedPath),
    /// As the layer was built with.
    Fixed(&'static str),
}

pin_project_lite::pin_project! {
    /// The response future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Some(seen), Ok(response)) = (this.seen.take(), result.as_mut()) {
            let elapsed = seen.started.elapsed();
            let route = match &seen.route {
                Some(RouteLabel::Matched(matched)) => matched.as_str(),
                Some(RouteLabel::Fixed(route)) => route,
                None => "unmatched",
            };
            let status = response.status();
            record_http_metrics(&seen.method, route, status.as_u16(), elapsed);
            let request_id = seen.request_id.to_str().unwrap_or("");
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            let method = seen.method.as_str();
            // A 503 is the service saying "not now" (no free session, not ready), not a failure.
            if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                let cause = response.extensions().get::<crate::error::InternalCause>().map_or("", |c| c.0.as_str());
                tracing::error!(
                    target: ACCESS_TARGET,
                    method,
                    route,
                    status = status.as_u16(),
                    latency_ms,
                    request_id,
                    cause,
                    "request failed"
                );
            } else {
                tracing::debug!(
                    target: ACCESS_TARGET,
                    method,
                    route,
                    status = status.as_u16(),
                    latency_ms,
                    request_id,
                    "request"
                );
            }
            response.headers_mut().insert(REQUEST_ID.clone(), seen.request_id);
        }
        Poll::Ready(result)
    }
}

/// Metric handles per (route, method, status), cached per thread: once its thread has seen its
/// kind, a request does no label allocation, no registry lookup and takes no lock (the metrics
/// themselves are still shared). The kinds are bounded: routes are the router's templates (or
/// `unmatched`), a method outside the standard ones is labelled `other`, and statuses are the
/// server's own.
fn record_http_metrics(method: &Method, route: &str, status: u16, elapsed: Duration) {
    thread_local! {
        static BY_ROUTE: RefCell<RouteHandles> = RefCell::default();
    }
    let method = method_label(method);
    let seconds = elapsed.as_secs_f64();
    BY_ROUTE.with_borrow_mut(|by_route| {
        let kinds = match by_route.get_mut(route) {
            Some(kinds) => kinds,
            None => by_route.entry(route.into()).or_default(),
        };
        let index = match kinds.iter().position(|(m, s, ..)| *m == method && *s == status) {
            Some(index) => index,
            None => {
                let counter = metrics::counter!("http_requests_total", "method" => method,
                    "route" => route.to_owned(), "status" => status.to_string());
                let histogram =
                    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned());
                kinds.push((method, status, counter, histogram));
                kinds.len() - 1
            }
        };
        let (.., counter, histogram) = &kinds[index];
        counter.increment(1);
        histogram.record(seconds);
    });
}

/// The handles of each (method, status) seen on a route, by route.
type RouteHandles = HashMap<Box<str>, Vec<(&'static str, u16, Counter, Histogram)>, foldhash::fast::RandomState>;

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

/// Layer of [`Admit`].
#[derive(Debug, Clone)]
pub struct AdmitLayer {
    state: AppState,
}

impl AdmitLayer {
    /// The gate for `state`'s keys and lifecycle.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit { inner, state: self.state.clone() }
    }
}

/// The gate of every request under `/v1`, by its raw path, so it covers unknown paths and any route
/// however it is mounted (an unknown `/v1` path answers 404 only to a client that may see it):
/// - when API keys are configured, a request needs `Authorization: Bearer KEY` with one of them,
///   else 401 `unauthorized`; keys are compared in constant time, every one of them, so timing tells
///   nothing about which one nearly matched;
/// - until the state is restored and once shutdown has begun, 503 `not_ready`.
#[derive(Debug, Clone)]
pub struct Admit<S> {
    inner: S,
    state: AppState,
}

impl<S> Admit<S> {
    fn refusal(&self, request: &Request) -> Option<ApiError> {
        let path = request.uri().path();
        let gated = path == "/v1" || path.starts_with("/v1/");
        if !gated {
            return None;
        }
        let keys = &self.state.config.api_key;
        if !keys.is_empty() {
            let token = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are `Bearer`.
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
                .map(|(_, token)| token.trim());
            let valid = token.is_some_and(|token| {
                keys.iter()
                    .fold(subtle::Choice::from(0), |found, key| found | key.as_bytes().ct_eq(token.as_bytes()))
                    .into()
            });
            if !valid {
                return Some(ApiError::Unauthorized);
            }
        }
        (!self.state.lifecycle.is_ready()).then_some(ApiError::NotReady)
    }
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.refusal(&request) {
            Some(refusal) => AdmitFuture::Refused { response: Some(refusal.into_response()) },
            None => AdmitFuture::Admitted { inner: self.inner.call(request) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Admit`].
    #[project = AdmitProj]
    pub enum AdmitFuture<F> {
        /// Refused before the handler.
        Refused { response: Option<Response> },
        /// Passed on.
        Admitted { #[pin] inner: F },
    }
}

impl<F, E> Future for AdmitFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| ApiError::NotReady.into_response())))
            }
            AdmitProj::Admitted { inner } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
    use tracing_subscriber::Layer as _;

    use super::*;

    /// (level, target, message, status) of every event seen.
    type Seen = Arc<Mutex<Vec<(tracing::Level, String, String, u64)>>>;

    struct Capture(Seen);

    #[derive(Default)]
    struct Fields {
        message: String,
        status: u64,
    }

    impl Visit for Fields {
        fn record_u64(&mut self, field: &Field, value: u64) {
            if field.name() == "status" {
                self.status = value;
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.message = format!("{value:?}");
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let meta = event.metadata();
            self.0.lock().unwrap().push((*meta.level(), meta.target().to_owned(), fields.message, fields.status));
        }
    }

    /// The events logged while serving one request to `path`, with the subscriber filtered at `level`.
    async fn events_for(
        path: &str,
        level: tracing::level_filters::LevelFilter,
    ) -> Vec<(tracing::Level, String, String, u64)> {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&seen)).with_filter(level));
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .layer(ObserveLayer::default());
        let response = app.oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        assert!(response.headers().contains_key(&REQUEST_ID));
        let events = seen.lock().unwrap().clone();
        events
    }

    #[tokio::test(flavor = "current_thread")]
    async fn routine_requests_log_at_debug_under_the_access_target() {
        use tracing::level_filters::LevelFilter;
        for (path, status) in [("/ok", 200), ("/busy", 503), ("/missing", 404)] {
            let events = events_for(path, LevelFilter::DEBUG).await;
            assert_eq!(events, [(tracing::Level::DEBUG, ACCESS_TARGET.to_owned(), "request".to_owned(), status)]);
            assert!(events_for(path, LevelFilter::INFO).await.is_empty(), "{path} logged at info");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn server_failures_log_an_error_at_the_default_level() {
        let events = events_for("/fail", tracing::level_filters::LevelFilter::INFO).await;
        assert_eq!(events, [(tracing::Level::ERROR, ACCESS_TARGET.to_owned(), "request failed".to_owned(), 500)]);
    }
}
