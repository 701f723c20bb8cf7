//! The HTTP layer: shared state, the router with its middleware, and the extractors that turn bad
//! input into `invalid_request` problems before a handler runs.
//!
//! One file per resource ([`service`], [`pools`], [`sessions`]), each with its own `router()`; DTOs
//! convert to domain types at this edge, so the core never sees JSON plumbing.

pub mod cookies;
pub mod edge;
pub mod hot;
pub mod json_out;
pub mod pools;
pub mod service;
pub mod sessions;
pub mod transfer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{SecondsFormat, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{ApiError, Result};
use crate::json::strict;
use crate::pool::{Registry, RegistryLimits};
use crate::session::Timestamp;
use crate::Config;

/// How long a request body may take to arrive before the request is answered 408
/// `request_timeout` (headers have their own limit in [`crate::serve`]).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What a panicking handler answers: 500 `internal`, its cause logged, never sent.
pub type PanicResponse = fn(Box<dyn std::any::Any + Send + 'static>) -> Response;

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
}

/// The layer that turns a panic in a handler into [`panic_response`].
fn catch_panic_layer() -> CatchPanicLayer<PanicResponse> {
    CatchPanicLayer::custom(panic_response as PanicResponse)
}

/// The whole application: every route, the 404/405 fallbacks and the middleware stack, with the
/// direct way in for the calls a scraper makes per page ([`hot`]).
pub fn app(state: AppState) -> hot::App {
    let router = routes(state.clone());
    hot::App::new(router, &state)
}

/// Every route, behind the middleware stack.
pub fn routes(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(pools::router())
        .merge(sessions::router())
        .merge(cookies::router())
        .merge(transfer::router());
    Router::new()
        .merge(service::router())
        .merge(v1)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One layer stack around every route (each `Router::layer` call boxes every route once more,
        // which costs every request an allocation and a copy of its future); `Admit` gates every
        // path under `/v1`.
        .layer(
            tower::ServiceBuilder::new()
                .layer(edge::ObserveLayer::default())
                .layer(catch_panic_layer())
                .layer(edge::AdmitLayer::new(state.clone())),
        )
        .with_state(state)
}

/// The server's clock, at millisecond precision (what the API shows).
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(3)
}

/// RFC 3339 in UTC with a `Z`, with as many fraction digits as the instant has.
pub fn format_time(t: Timestamp) -> String {
    Rfc3339(t).to_string()
}

/// How many fraction digits [`Rfc3339::write_fast`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fraction {
    /// 0, 3, 6 or 9, as the instant needs (chrono's `SecondsFormat::AutoSi`): what the API shows.
    AsNeeded,
    /// Always 6, truncated: log lines, whose columns stay aligned.
    Micros,
}

/// An instant written as RFC 3339 in UTC with a `Z` and 0, 3, 6 or 9 fraction digits, as needed
/// (chrono's `SecondsFormat::AutoSi`). A session answer holds up to five of them, so the common case
/// (years 0 to 9999, no leap second) is written digit by digit into a stack buffer: through
/// `core::fmt` with padding it was the largest part of serializing a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub Timestamp);

impl Rfc3339 {
    /// The longest text [`Rfc3339::write_fast`] produces: `9999-12-31T23:59:59.999999999Z`.
    pub(crate) const FAST_LEN: usize = 30;

    /// Writes the common case into `buf` with the fraction digits `fraction` asks for and returns
    /// its length; `None` for what chrono writes (years outside 0-9999, leap seconds).
    pub(crate) fn write_fast(self, buf: &mut [u8; Self::FAST_LEN], fraction: Fraction) -> Option<usize> {
        use chrono::{Datelike, Timelike};
        // Through the naive parts: each accessor of a `DateTime` converts it to local time first.
        let (date, time) = (self.0.date_naive(), self.0.time());
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        let nanos = time.nanosecond();
        if nanos >= 1_000_000_000 {
            return None; // a leap second
        }
        let seconds = time.num_seconds_from_midnight();
        /// "00" to "99", so digits are written two at a time.
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
                                    2021222324252627282930313233343536373839\
                                    4041424344454647484950515253545556575859\
                                    6061626364656667686970717273747576777879\
                                    8081828384858687888990919293949596979899";
        /// Writes the `out.len()` lowest decimal digits of `value`, zero-padded.
        fn digits(out: &mut [u8], mut value: u32) {
            let mut end = out.len();
            while end >= 2 {
                let pair = (value % 100) as usize * 2;
                out[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
                value /= 100;
                end -= 2;
            }
            if end == 1 {
                out[0] = b'0' + (value % 10) as u8;
            }
        }
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], date.month());
        buf[7] = b'-';
        digits(&mut buf[8..10], date.day());
        buf[10] = b'T';
        digits(&mut buf[11..13], seconds / 3600);
        buf[13] = b':';
        digits(&mut buf[14..16], seconds / 60 % 60);
        buf[16] = b':';
        digits(&mut buf[17..19], seconds % 60);
        let (fraction, width) = match (fraction, nanos) {
            (Fraction::Micros, n) => (n / 1_000, 6),
            (Fraction::AsNeeded, 0) => (0, 0),
            (Fraction::AsNeeded, n) if n % 1_000_000 == 0 => (n / 1_000_000, 3),
            (Fraction::AsNeeded, n) if n % 1_000 == 0 => (n / 1_000, 6),
            (Fraction::AsNeeded, n) => (n, 9),
        };
        let mut len = 19;
        if width > 0 {
            buf[19] = b'.';
            digits(&mut buf[20..20 + width], fraction);
            len = 20 + width;
        }
        buf[len] = b'Z';
        Some(len + 1)
    }
}

impl Rfc3339 {
    /// Writes the instant as a JSON string.
    pub fn write_json(self, out: &mut Vec<u8>) {
        let mut buf = [0u8; Self::FAST_LEN];
        match self.write_fast(&mut buf, Fraction::AsNeeded) {
            Some(len) => {
                out.push(b'"');
                out.extend_from_slice(&buf[..len]);
                out.push(b'"');
            }
            None => json_out::string(out, &self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; Self::FAST_LEN];
        match self.write_fast(&mut buf, Fraction::AsNeeded) {
            Some(len) => f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| std::fmt::Error)?),
            None => f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; Self::FAST_LEN];
        match self.write_fast(&mut buf, Fraction::AsNeeded).map(|len| std::str::from_utf8(&buf[..len])) {
            Some(Ok(text)) => serializer.serialize_str(text),
            _ => serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
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
        let bytes = read_body(request, state, BODY_TIMEOUT).await?;
        let body: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => b"{}",
            Some(_) if !is_json => return Err(ApiError::UnsupportedMediaType),
            Some(b'{') => &bytes,
            Some(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        };
        let parse = || strict::from_slice(body).map(AppJson).map_err(ApiError::InvalidRequest);
        off_the_runtime_if(body.len() > LARGE_BODY_BYTES, parse)
    }
}

/// A body above this is parsed off the runtime's worker (see [`off_the_runtime_if`]).
const LARGE_BODY_BYTES: usize = 1024 * 1024;

/// Runs `work` so that, when `large`, it does not hold up the other requests queued on this runtime
/// worker: `block_in_place` hands them to another worker first. Work on one large pool (a fill of a
/// million sessions, an import of a large document) so takes one thread, and every other request,
/// `/healthz` and other pools included, goes on being served. Small work runs inline: handing off a
/// worker costs more than it saves. On a single-threaded runtime (some tests) it always runs inline.
pub fn off_the_runtime_if<R>(large: bool, work: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if large && multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Reads the whole body within `limit`, refusing more than `--max-body-bytes`. A small body is
/// usually complete when the handler starts, so the first poll finishes it and no timer is armed;
/// only a body still in flight gets one (a timer per request showed in profiles of the hot path).
/// A body of one frame, the common case, is taken as it is, without collecting it into a buffer.
async fn read_body(request: Request, state: &AppState, limit: Duration) -> Result<Bytes> {
    let max = state.config.max_body_bytes;
    let mut read = std::pin::pin!(collect_body(request.into_body(), max));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx))).await;
    match first {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => {
            tokio::time::timeout(limit, read).await.map_err(|_| ApiError::RequestTimeout(limit.as_secs()))?
        }
    }
}

async fn collect_body(mut body: axum::body::Body, max: usize) -> Result<Bytes> {
    use http_body_util::BodyExt;
    let too_large = || ApiError::PayloadTooLarge(max);
    if axum::body::HttpBody::size_hint(&body).lower() > max as u64 {
        return Err(too_large());
    }
    // One frame stays the `Bytes` it arrived in; only a body of several frames is copied together.
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::invalid("the request body could not be read"))?;
        let Ok(data) = frame.into_data() else { continue };
        let held = first.as_ref().map_or(joined.len(), Bytes::len);
        if held + data.len() > max {
            return Err(too_large());
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(previous) => {
                joined.reserve(previous.len() + data.len());
                joined.extend_from_slice(&previous);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().as_bytes();
    let starts = |prefix: &[u8]| essence.len() >= prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix);
    let ends = |suffix: &[u8]| {
        essence.len() >= suffix.len() && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    essence.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
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
    // By bytes: every byte of a non-ASCII character is >= 0x80 and fails the test like the character.
    let mut bytes = name.bytes();
    let valid = name.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(name)
    } else {
        Err(ApiError::invalid(format!("pool name {name:?} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$")))
    }
}

/// Checks a session id against `^[A-Za-z0-9_.~-]{1,128}$` (the URL-unreserved characters), except
/// `.` and `..`, which URLs treat as path steps: a client's URL library would resolve them away
/// before the request left.
///
/// # Errors
/// `invalid_request` naming the value.
pub fn check_session_id(id: &str) -> Result<&str> {
    let valid = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if !valid {
        Err(ApiError::invalid(format!("session id {id:?} must match ^[A-Za-z0-9_.~-]{{1,128}}$")))
    } else if id == "." || id == ".." {
        Err(ApiError::invalid(format!("session id {id:?} is not allowed: URLs treat . and .. as path steps")))
    } else {
        Ok(id)
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
    use proptest::prelude::*;

    /// A body that arrives in the given frames, with no size hint (like a chunked upload); then ends,
    /// or, when `stall`, sends nothing more, like a client that stopped mid-upload.
    struct Frames {
        chunks: std::collections::VecDeque<&'static [u8]>,
        stall: bool,
    }

    impl axum::body::HttpBody for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
            match self.chunks.pop_front() {
                Some(chunk) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(chunk))))),
                None if self.stall => std::task::Poll::Pending,
                None => std::task::Poll::Ready(None),
            }
        }
    }

    fn frames(chunks: &[&'static [u8]], stall: bool) -> axum::body::Body {
        axum::body::Body::new(Frames { chunks: chunks.iter().copied().collect(), stall })
    }

    #[tokio::test]
    async fn a_body_is_read_whole_from_any_number_of_frames_and_refused_past_the_limit() {
        let framings: [&[&'static [u8]]; 4] = [&[], &[b"{}"], &[b"{\"lea", b"se_secs\"", b"", b":30}"], &[b"", b"{}"]];
        for parts in framings {
            let whole = collect_body(frames(parts, false), 100).await.unwrap();
            assert_eq!(whole, parts.concat(), "{parts:?}");
        }
        let exactly = collect_body(frames(&[b"12345", b"67890"], false), 10).await.unwrap();
        assert_eq!(&exactly[..], b"1234567890");
        let over: [&[&'static [u8]]; 2] = [&[b"12345", b"678901"], &[b"12345678901"]];
        for parts in over {
            let refused = collect_body(frames(parts, false), 10).await;
            assert!(matches!(refused, Err(ApiError::PayloadTooLarge(10))), "{refused:?}");
        }
        // A declared length over the limit is refused before anything is read.
        let declared = collect_body(axum::body::Body::from(vec![b'x'; 11]), 10).await;
        assert!(matches!(declared, Err(ApiError::PayloadTooLarge(10))), "{declared:?}");
    }

    fn request(body: axum::body::Body) -> Request {
        Request::builder().method(axum::http::Method::POST).uri("/").body(body).unwrap()
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_a_request_timeout_and_a_whole_one_is_read() {
        let state = AppState::new(crate::Config::default());
        let limit = Duration::from_millis(100);
        let stalled = read_body(request(frames(&[b"{\"lease_"], true)), &state, limit).await;
        assert!(matches!(stalled, Err(ApiError::RequestTimeout(_))), "{stalled:?}");
        assert_eq!(ApiError::RequestTimeout(30).into_response().status(), StatusCode::REQUEST_TIMEOUT);
        let whole = read_body(request(axum::body::Body::from("{}")), &state, limit).await.unwrap();
        assert_eq!(&whole[..], b"{}");
    }

    proptest! {
        #[test]
        fn rfc3339_writes_what_chrono_writes(
            secs in -70_000_000_000i64..300_000_000_000i64,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1000), 0u32..1_000_000_000, 1_000_000_000u32..2_000_000_000],
        ) {
            if let Some(t) = chrono::DateTime::from_timestamp(secs, nanos) {
                let expected = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
                prop_assert_eq!(Rfc3339(t).to_string(), expected.clone());
                prop_assert_eq!(serde_json::to_string(&Rfc3339(t)).unwrap(), format!("\"{expected}\""));
                let mut buf = [0u8; Rfc3339::FAST_LEN];
                if let Some(len) = Rfc3339(t).write_fast(&mut buf, Fraction::Micros) {
                    let micros = t.to_rfc3339_opts(SecondsFormat::Micros, true);
                    prop_assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), micros);
                }
            }
        }
    }

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
        assert!(check_session_id(".").is_err());
        assert!(check_session_id("..").is_err());
        assert!(check_session_id("...").is_ok());
        assert!(check_session_id("_").is_ok());
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
        assert!(is_json_media_type(" Application/JSON ;charset=utf-8"));
        assert!(is_json_media_type("APPLICATION/Merge-Patch+JSON"));
        for not_json in ["", "application/jsonx", "application/jso", "text/json", "json", "application+json", "+json"] {
            assert!(!is_json_media_type(not_json), "{not_json:?}");
        }
    }
}
