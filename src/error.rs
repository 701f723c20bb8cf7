//! `ApiError`, the only place that knows HTTP status codes, rendered as RFC 9457 problem details.
//!
//! Every error a client can see has a stable `type` code (openapi.yaml's Problem schema). Internal
//! failures answer a generic 500; their cause goes to the request's access log line, never to the
//! client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pool::PoolError;
use crate::session;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown fields, values out of range, bad names.
    #[error("{0}")]
    InvalidRequest(String),
    /// An API key is configured and the request has none that is valid.
    #[error("a valid `Authorization: Bearer` API key is required")]
    Unauthorized,
    /// The pool does not exist.
    #[error("pool {0:?} does not exist")]
    PoolNotFound(String),
    /// The session does not exist in that pool.
    #[error("session {0:?} does not exist in this pool")]
    SessionNotFound(String),
    /// Create with an id the pool holds.
    #[error("session {0:?} already exists in this pool")]
    SessionExists(String),
    /// Release with a lease id that is not the current lease.
    #[error("lease_id {0:?} is not the session's current lease")]
    LeaseMismatch(String),
    /// The state is not restored yet, shutdown has begun, or the store cannot be reached: the
    /// detail says which.
    #[error("{0}")]
    NotReady(String),
    /// Acquire found no free usable session and could not create one.
    #[error("no session is available: every usable session is leased and the pool cannot grow")]
    NoSessionAvailable,
    /// `--max-pools` or `--max-sessions` reached.
    #[error("{0}")]
    LimitReached(String),
    /// Body over `--max-body-bytes`.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A body that is not JSON.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The body did not arrive within the time allowed.
    #[error("the request body did not arrive within {0} seconds")]
    RequestTimeout(u64),
    /// Unknown path.
    #[error("no such path")]
    NotFound,
    /// Known path, unknown method.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    /// Anything else; its text is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// `Result` with [`ApiError`] as its default error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PoolNotFound(_) | Self::SessionNotFound(_) | Self::NotFound => StatusCode::NOT_FOUND,
            Self::SessionExists(_) | Self::LeaseMismatch(_) | Self::LimitReached(_) => StatusCode::CONFLICT,
            Self::NotReady(_) | Self::NoSessionAvailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable problem `type` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::PoolNotFound(_) => "pool_not_found",
            Self::SessionNotFound(_) => "session_not_found",
            Self::SessionExists(_) => "session_exists",
            Self::LeaseMismatch(_) => "lease_mismatch",
            Self::NotReady(_) => "not_ready",
            Self::NoSessionAvailable => "no_session_available",
            Self::LimitReached(_) => "limit_reached",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RequestTimeout(_) => "request_timeout",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "Invalid request",
            Self::Unauthorized => "Unauthorized",
            Self::PoolNotFound(_) => "Pool not found",
            Self::SessionNotFound(_) => "Session not found",
            Self::SessionExists(_) => "Session exists",
            Self::LeaseMismatch(_) => "Lease mismatch",
            Self::NotReady(_) => "Not ready",
            Self::NoSessionAvailable => "No session available",
            Self::LimitReached(_) => "Limit reached",
            Self::PayloadTooLarge(_) => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RequestTimeout(_) => "Request timeout",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Internal(_) => "Internal server error",
        }
    }

    /// Shorthand for a 400 naming what is wrong.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::InvalidRequest(detail.into())
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    code: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let problem =
            Problem { code: self.code(), title: self.title(), status: status.as_u16(), detail: self.to_string() };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::NotReady(_) | Self::NoSessionAvailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        // The cause of a 5xx travels with the answer to the access log (`api::edge`), which logs it once.
        if let Self::Internal(cause) = self {
            response.extensions_mut().insert(InternalCause(format!("{cause:#}")));
        }
        response
    }
}

/// The text of an internal error, attached to the response for the log and stripped from the body.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::PoolNotFound(name) => Self::PoolNotFound(name),
            PoolError::SessionNotFound(id) => Self::SessionNotFound(id),
            PoolError::SessionExists(id) => Self::SessionExists(id),
            PoolError::LeaseMismatch(id) => Self::LeaseMismatch(id),
            PoolError::NoSessionAvailable => Self::NoSessionAvailable,
            PoolError::LimitReached(detail) => Self::LimitReached(detail),
            PoolError::Invalid(e) => e.into(),
            PoolError::Unavailable(why) => Self::NotReady(format!("the store cannot serve this call now: {why}")),
            PoolError::Damaged(_) | PoolError::Conflict => Self::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<session::Error> for ApiError {
    fn from(e: session::Error) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}
