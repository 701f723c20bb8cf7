"""The exceptions of the client: one class per problem `type` of the API, plus the client's own."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "InvalidArgument",
    "InvalidRequest",
    "LeaseMismatch",
    "LimitReached",
    "MethodNotAllowed",
    "NoSessionAvailable",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "PoolNotFound",
    "RequestTimeout",
    "ServiceUnavailable",
    "SessionExists",
    "SessionNotFound",
    "SessionPoolError",
    "Unauthorized",
    "UnexpectedResponse",
    "UnsupportedMediaType",
    "error_for_problem",
]


class SessionPoolError(Exception):
    """The base of every exception this package raises."""


class InvalidArgument(SessionPoolError, ValueError):
    """An argument the caller gave is wrong; raised before anything is sent (a pool name with spaces,
    a base URL that is not http(s), a page URL that is not absolute, ...)."""


class ServiceUnavailable(SessionPoolError, ConnectionError):
    """The service could not be reached (connection refused, DNS failure, timeout), after the retries
    that were safe for this call."""

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class UnexpectedResponse(SessionPoolError):
    """An answer that is not what the API describes (not JSON, or an error without a problem body):
    usually a wrong base URL that points at another server."""

    def __init__(self, message: str, *, status: int, method: str, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url


class ApiError(SessionPoolError):
    """An `application/problem+json` answer of the service. `type` is the stable code, `detail` names
    the offending field or value."""

    #: the problem `type` this class stands for (None on the base class)
    code: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        type: str | None = None,  # noqa: A002 - the RFC 9457 member name
        title: str = "",
        status: int = 0,
        method: str = "",
        url: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        self.type = type or self.code or "unknown"
        self.title = title
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        self.request_id = request_id
        self.retry_after = retry_after
        self.problem = problem or {}
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{self.type}: {detail}{where}")


class InvalidRequest(ApiError):
    """400: malformed JSON, a wrong type, an unknown field, a value out of range, a bad name in the path."""

    code = "invalid_request"


class Unauthorized(ApiError):
    """401: the service has API keys and the request had none or a wrong one."""

    code = "unauthorized"


class PoolNotFound(ApiError):
    """404: the pool does not exist (on calls that do not create pools)."""

    code = "pool_not_found"


class SessionNotFound(ApiError):
    """404: no such session in that pool (never created, deleted, or purged after its retirement)."""

    code = "session_not_found"


class SessionExists(ApiError):
    """409: a create with an id the pool already holds."""

    code = "session_exists"


class LeaseMismatch(ApiError):
    """409: a release with a lease id that is not the session's current lease (it ended: released,
    reported with, run out, or it was never this session's lease)."""

    code = "lease_mismatch"


class NotReady(ApiError):
    """503: the service is restoring its state or shutting down; `retry_after` says when to try again."""

    code = "not_ready"


class NoSessionAvailable(ApiError):
    """503: every usable session is leased and the pool is full; `retry_after` says when to try again."""

    code = "no_session_available"


class LimitReached(ApiError):
    """409: a new pool past `--max-pools` or a new session past `--max-sessions`."""

    code = "limit_reached"


class PayloadTooLarge(ApiError):
    """413: the body is over the service's `--max-body-bytes`."""

    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    """415: the body was not `application/json`."""

    code = "unsupported_media_type"


class RequestTimeout(ApiError):
    """408: the body did not arrive in time."""

    code = "request_timeout"


class NotFound(ApiError):
    """404: no such path (often a base URL with a wrong prefix)."""

    code = "not_found"


class MethodNotAllowed(ApiError):
    """405: the path exists but not with this method."""

    code = "method_not_allowed"


#: every problem `type` this client knows, with its class (the one table `error_for_problem` reads)
PROBLEM_TYPES: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Unauthorized,
        PoolNotFound,
        SessionNotFound,
        SessionExists,
        LeaseMismatch,
        NotReady,
        NoSessionAvailable,
        LimitReached,
        PayloadTooLarge,
        UnsupportedMediaType,
        RequestTimeout,
        NotFound,
        MethodNotAllowed,
    )
    if cls.code
}


def error_for_problem(
    problem: dict[str, Any],
    *,
    status: int,
    method: str,
    url: str,
    request_id: str | None,
    retry_after: float | None,
    hint: str | None = None,
) -> ApiError:
    """The exception for one problem body; an unknown `type` gives the base `ApiError`."""
    code = str(problem.get("type", ""))
    cls = PROBLEM_TYPES.get(code, ApiError)
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if hint:
        detail = f"{detail}; {hint}"
    return cls(
        detail,
        type=code or None,
        title=str(problem.get("title", "")),
        status=status,
        method=method,
        url=url,
        request_id=request_id,
        retry_after=retry_after,
        problem=problem,
    )
