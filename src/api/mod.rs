//! The HTTP layer: shared state, the router with its middleware, and the extractors that turn bad
//! input into `invalid_request` problems before a handler runs.
//!
//! One file per resource ([`service`], [`pools`], [`sessions`]), each with its own `router()`; DTOs
//! convert to domain types at this edge, so the core never sees JSON plumbing.

pub mod cookies;
pub mod edge;
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
use serde::de::DeserializeOwned;

use crate::clock::now;
use crate::error::{ApiError, Result};
use crate::json::strict;
use crate::pool::{Registry, RegistryLimits};
use crate::store::off_the_runtime_if;
use crate::store::Store;
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

    /// Why the server takes no work, or `None` when it does.
    fn why_not_ready(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::Acquire) {
            Some("the server is shutting down")
        } else if !self.ready.load(Ordering::Acquire) {
            Some("the server is starting up (restoring its state, or reaching its store)")
        } else {
            None
        }
    }
}

/// Everything a handler reads. Cloned for every request and middleware, so it is one `Arc`: one
/// reference count to touch, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// Where the pools live: every pool operation of a handler is a call of it.
    pub store: Store,
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
    /// The answer of `/readyz` and of every `/v1` call while the server cannot serve: starting up,
    /// shutting down, or its store out of reach; `None` when it can.
    pub fn not_ready(&self) -> Option<ApiError> {
        let why = self.lifecycle.why_not_ready().or_else(|| {
            (!self.store.is_ready()).then_some("the store cannot be reached; the server reconnects by itself")
        })?;
        Some(ApiError::NotReady(why.to_owned()))
    }

    /// A fresh state with the `default` pool, ready to serve (nothing to restore).
    pub fn new(config: Config) -> Self {
        let state = Self::starting(config);
        state.lifecycle.set_ready();
        state
    }

    /// A fresh state with the memory store ([`memory_registry`]) that answers 503 `not_ready` until
    /// [`Lifecycle::set_ready`].
    pub fn starting(config: Config) -> Self {
        let store = Store::Memory(Arc::new(memory_registry(&config)));
        Self::with_store(config, store)
    }

    /// A state serving `store` that answers 503 `not_ready` until [`Lifecycle::set_ready`].
    pub fn with_store(config: Config, store: Store) -> Self {
        let lifecycle = Lifecycle::default();
        Self(Arc::new(Shared { store, config: Arc::new(config), lifecycle: Arc::new(lifecycle) }))
    }
}

/// A registry of pools as `config` sets it up (`--max-pools`, `--max-sessions`, retention, the
/// `default` pool), for the memory store.
pub fn memory_registry(config: &Config) -> Registry {
    // Metric handles taken before the recorder is installed record nowhere: install it before
    // any pool registers its own (a no-op when `run` did already).
    service::metrics_handle();
    let limits = RegistryLimits {
        max_pools: config.max_pools,
        max_sessions: config.max_sessions,
        retention: crate::session::secs_to_delta(config.retired_retention_secs),
    };
    Registry::new(config.pool_defaults(), limits, now())
}

/// The whole application: every route and the 404/405 fallbacks, inside one middleware stack
/// ([`edge::wrap`]).
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(service::router())
        .merge(pools::router())
        .merge(sessions::router())
        .merge(cookies::router())
        .merge(transfer::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    edge::wrap(routes, state.clone()).with_state(state)
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

/// Reads the whole body within `limit`, refusing more than `--max-body-bytes` (a declared length over
/// it before anything is read).
async fn read_body(request: Request, state: &AppState, limit: Duration) -> Result<Bytes> {
    let read = collect_body(request.into_body(), state.config.max_body_bytes);
    tokio::time::timeout(limit, read).await.map_err(|_| ApiError::RequestTimeout(limit.as_secs()))?
}

async fn collect_body(body: axum::body::Body, max: usize) -> Result<Bytes> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    // A `Content-Length` over the limit is refused at once: the client learns it before sending
    // the body, and a slow sender cannot hold the request open until the read timeout.
    if axum::body::HttpBody::size_hint(&body).lower() > max as u64 {
        return Err(ApiError::PayloadTooLarge(max));
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(max)),
        Err(_) => Err(ApiError::invalid("the request body could not be read")),
    }
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

/// The answer `status` with `value` as its JSON body. Handlers call it while the pool is still
/// locked, on views that borrow from it, so what the client reads is the state its own call left.
///
/// # Errors
/// `Internal` if serialization fails (it cannot for these types).
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Result<Response> {
    // Room for a whole Session object, so the common answer is written without regrowing.
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that arrives in the given frames, with the size hint `declared` gives (none, like a
    /// chunked upload, or a `Content-Length`); then ends, or, when `stall`, sends nothing more, like
    /// a client that stopped mid-upload.
    struct Frames {
        chunks: std::collections::VecDeque<&'static [u8]>,
        stall: bool,
        declared: Option<u64>,
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

        fn size_hint(&self) -> http_body::SizeHint {
            self.declared.map_or_else(http_body::SizeHint::default, http_body::SizeHint::with_exact)
        }
    }

    fn frames(chunks: &[&'static [u8]], stall: bool) -> axum::body::Body {
        axum::body::Body::new(Frames { chunks: chunks.iter().copied().collect(), stall, declared: None })
    }

    /// A body that declares `length` bytes (as `Content-Length` does) and never sends one.
    fn declares(length: u64) -> axum::body::Body {
        axum::body::Body::new(Frames { chunks: Default::default(), stall: true, declared: Some(length) })
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
        // A declared length over the limit is refused before anything is read: this body declares
        // 11 bytes and would stall forever if a byte were awaited.
        let declared = tokio::time::timeout(Duration::from_secs(5), collect_body(declares(11), 10)).await;
        assert!(matches!(declared, Ok(Err(ApiError::PayloadTooLarge(10)))), "{declared:?}");
        let within = tokio::time::timeout(Duration::from_millis(50), collect_body(declares(10), 10)).await;
        assert!(within.is_err(), "a declared length within the limit is awaited, not refused: {within:?}");
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
