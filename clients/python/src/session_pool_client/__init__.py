"""Client of the session-pool service: Crawlee's Session/SessionPool shared by a cluster of scrapers.

- `SessionPoolClient` / `AsyncSessionPoolClient`: every operation of the service's `openapi.yaml`.
- `session_pool_client.crawlee.RemoteSessionPool`: a drop-in `crawlee.sessions.SessionPool`
  (extra `[crawlee]`).
- `session_pool_client.scrapy.SessionPoolMiddleware`: a Scrapy downloader middleware (extra `[scrapy]`).
"""

from ._client import OPERATIONS, AsyncSessionPoolClient, SessionPoolClient
from ._errors import (
    PROBLEM_TYPES,
    ApiError,
    InvalidArgument,
    InvalidRequest,
    LeaseMismatch,
    LimitReached,
    MethodNotAllowed,
    NoSessionAvailable,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PoolNotFound,
    RequestTimeout,
    ServiceUnavailable,
    SessionExists,
    SessionNotFound,
    SessionPoolError,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
)
from ._models import (
    Cookie,
    CookiesForUrl,
    ImportResult,
    Lease,
    PoolConfig,
    PoolStatus,
    Session,
    SessionList,
    SessionSettings,
    StatusCodeResult,
)

__version__ = "0.1.0"

__all__ = [
    "OPERATIONS",
    "PROBLEM_TYPES",
    "ApiError",
    "AsyncSessionPoolClient",
    "Cookie",
    "CookiesForUrl",
    "ImportResult",
    "InvalidArgument",
    "InvalidRequest",
    "Lease",
    "LeaseMismatch",
    "LimitReached",
    "MethodNotAllowed",
    "NoSessionAvailable",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "PoolConfig",
    "PoolNotFound",
    "PoolStatus",
    "RequestTimeout",
    "ServiceUnavailable",
    "Session",
    "SessionExists",
    "SessionList",
    "SessionNotFound",
    "SessionPoolClient",
    "SessionPoolError",
    "SessionSettings",
    "StatusCodeResult",
    "Unauthorized",
    "UnexpectedResponse",
    "UnsupportedMediaType",
]
