"""`SessionPoolClient` (sync) and `AsyncSessionPoolClient` (async): one method per operation of the
service's `openapi.yaml`, on httpx.

Retries. A call is repeated only when repeating it cannot do anything twice:

- a connection that could not be opened (refused, DNS, connect timeout): nothing was sent, so every call
  is retried, with backoff, until `retry_timeout` has passed (this is how a client rides out a restart of
  the service). That is for a service that has answered this process before: until one has answered at
  the URL, connection errors are retried for 2 seconds at most, so that a wrong URL (nothing listening,
  a name that does not resolve) fails in seconds with a `ServiceUnavailable` naming it;
- a `503 not_ready` answer (the service is restoring its state or shutting down): nothing was done, so
  every call is retried after its `Retry-After` (at most 2 s between tries: a service coming back is
  found quickly), within the same `retry_timeout`;
- a connection lost after the request was sent (read error, read timeout, the server closing the
  connection): retried only for the calls that are safe to repeat, the ones marked *idempotent* in their
  docstrings: every GET, `put_pool`, `delete_pool`, `delete_session`, `patch_session`, `store_cookies`,
  `retire`, `release` (a repeat that finds the lease ended, `LeaseMismatch`, returns the session: the
  lost attempt ended it, or it ran out), `report_status_code` without `mark`, and
  `acquire(retry_lost_answers=True)` (which accepts that a lost answer may have leased a session).
  `acquire`, `create_session`, `mark_good`, `mark_bad`, `report_status_code(mark=True)` and
  `import_pool` are not repeated blindly after the request
  may have reached the service. A report given its lease as the `Lease` object
  (`lease_id=session.lease`) can tell: the client reads the session, and sends the report again while
  the session still shows that lease (a report that arrived would have ended it) or is retired (a report
  then changes nothing). When the lease is gone and the read was, by the service's clock, at least 2 s
  before the lease's end, the report ended it: the session read is the result. A lease also ends by
  running out, so a lease gone later than that proves nothing, and `ServiceUnavailable` says the report
  may not have arrived. Without a `Lease`, the error is raised (`ServiceUnavailable`).

`acquire(wait_secs=...)` also waits for `503 no_session_available`, honouring `Retry-After`, until the
caller's deadline.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from ._errors import (
    ApiError,
    InvalidArgument,
    LeaseMismatch,
    NoSessionAvailable,
    NotReady,
    ServiceUnavailable,
    SessionPoolError,
    UnexpectedResponse,
    error_for_problem,
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
    StatusCodeResult,
)

__all__ = ["OPERATIONS", "AsyncSessionPoolClient", "SessionPoolClient"]

T = TypeVar("T")

POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")
SESSION_STATES = ("usable", "retired", "leased", "all")

#: operationId of `openapi.yaml` -> (HTTP method, path template, client method name). Every call takes
#: its method and path from here, and a test compares this table with the spec: an operation without a
#: method here (or on either client), or a path that differs, fails it.
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "healthz": ("GET", "/healthz", "healthz"),
    "readyz": ("GET", "/readyz", "readyz"),
    "metrics": ("GET", "/metrics", "metrics"),
    "getOpenApi": ("GET", "/openapi.yaml", "openapi"),
    "listPools": ("GET", "/v1/pools", "list_pools"),
    "putPool": ("PUT", "/v1/pools/{pool}", "put_pool"),
    "getPool": ("GET", "/v1/pools/{pool}", "get_pool"),
    "deletePool": ("DELETE", "/v1/pools/{pool}", "delete_pool"),
    "acquireSession": ("POST", "/v1/pools/{pool}/acquire", "acquire"),
    "createSession": ("POST", "/v1/pools/{pool}/sessions", "create_session"),
    "listSessions": ("GET", "/v1/pools/{pool}/sessions", "list_sessions"),
    "getSession": ("GET", "/v1/pools/{pool}/sessions/{id}", "get_session"),
    "patchSession": ("PATCH", "/v1/pools/{pool}/sessions/{id}", "patch_session"),
    "deleteSession": ("DELETE", "/v1/pools/{pool}/sessions/{id}", "delete_session"),
    "markGood": ("POST", "/v1/pools/{pool}/sessions/{id}/mark_good", "mark_good"),
    "markBad": ("POST", "/v1/pools/{pool}/sessions/{id}/mark_bad", "mark_bad"),
    "retireSession": ("POST", "/v1/pools/{pool}/sessions/{id}/retire", "retire"),
    "releaseSession": ("POST", "/v1/pools/{pool}/sessions/{id}/release", "release"),
    "reportStatusCode": ("POST", "/v1/pools/{pool}/sessions/{id}/status_code", "report_status_code"),
    "storeCookies": ("POST", "/v1/pools/{pool}/sessions/{id}/cookies", "store_cookies"),
    "cookiesForUrl": ("GET", "/v1/pools/{pool}/sessions/{id}/cookies", "cookies_for_url"),
    "exportPool": ("GET", "/v1/pools/{pool}/export", "export_pool"),
    "importPool": ("POST", "/v1/pools/{pool}/import", "import_pool"),
}


# ---------------------------------------------------------------------------------------------------
# Checking what the caller gave, before anything is sent


def check_pool(pool: str) -> str:
    if not isinstance(pool, str) or not POOL_NAME.match(pool):
        raise InvalidArgument(
            f"pool name {pool!r} is not valid: it must start with a letter or digit and hold only letters, "
            f"digits, '.', '_' and '-', at most 128 characters (a host name such as www.example.com is fine)"
        )
    return pool


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id) or session_id in (".", ".."):
        raise InvalidArgument(
            f"session id {session_id!r} is not valid: 1 to 128 of the characters A-Z a-z 0-9 _ . ~ - "
            f"(and not '.' or '..')"
        )
    return session_id


def check_page_url(url: str, what: str = "url") -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"{what} {url!r} is not an absolute http(s) URL with a host")
    return url


def check_lease_secs(lease_secs: float | None) -> float | None:
    if lease_secs is None:
        return None
    if isinstance(lease_secs, bool) or not isinstance(lease_secs, (int, float)) or not 0 < lease_secs <= 3600:
        raise InvalidArgument(f"lease_secs {lease_secs!r} is out of range: it must be > 0 and <= 3600 seconds")
    return lease_secs


def check_status_code(code: int, what: str = "status_code") -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise InvalidArgument(f"{what} {code!r} is not an HTTP status code (an integer in 100..599)")
    return code


def check_base_url(url: str | None) -> str:
    if url is None:
        url = os.environ.get("SESSION_POOL_URL")
    if not url:
        raise InvalidArgument(
            "no session-pool URL: pass url='http://host:port' or set the SESSION_POOL_URL environment variable"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"session-pool URL {url!r} is not an http(s) URL with a host, such as http://127.0.0.1:8080")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InvalidArgument(f"session-pool URL {url!r} has a bad port: {e}") from None
    return url.rstrip("/")


def _cookies_json(cookies: Any) -> Any:
    if cookies is None:
        return None
    if isinstance(cookies, dict):
        return dict(cookies)
    return [c.to_json() if isinstance(c, Cookie) else dict(c) for c in cookies]


def _report_body(
    lease_id: str | Lease | None, url: str | None, set_cookie: list[str] | None, cookies: Any
) -> dict[str, Any] | None:
    body: dict[str, Any] = {}
    if lease_id is not None:
        body["lease_id"] = lease_id.id if isinstance(lease_id, Lease) else lease_id
    if (url is None) != (set_cookie is None):
        raise InvalidArgument("url and set_cookie come together: give both (the page and its Set-Cookie headers) or neither")
    if url is not None:
        body["url"] = check_page_url(url)
        if isinstance(set_cookie, str) or not all(isinstance(h, str) for h in set_cookie or []):
            raise InvalidArgument("set_cookie must be a list of Set-Cookie header values (strings)")
        body["set_cookie"] = list(set_cookie or [])
    if cookies is not None:
        body["cookies"] = _cookies_json(cookies)
    return body or None


# ---------------------------------------------------------------------------------------------------
# One call, independent of sync or async


@dataclass
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    idempotent: bool
    json: Any = None
    params: dict[str, Any] | None = None
    ok: tuple[int, ...] = (200,)
    on_error: Callable[[Exception], Exception] | None = field(default=None)
    # A report that ends a lease can tell whether it arrived (`_after_check`): while the session still
    # shows that lease (its expiry), it did not. (the session's path, the lease's expiry, the result made
    # of the session)
    lease_check: tuple[str, datetime, Callable[[Session], Any]] | None = None
    # A release repeated after a lost answer may find its lease ended by the first attempt: a
    # LeaseMismatch then is success, and the session read at this path is the result.
    mismatch_after_lost: str | None = None
    # Set once an attempt's answer was lost after the request may have reached the service.
    answer_lost: bool = False


def _json(parse: Callable[[dict[str, Any]], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(response.json())


def _route(operation: str, pool: str | None = None, session_id: str | None = None) -> tuple[str, str]:
    """The HTTP method and path of an operation of `OPERATIONS`, its names checked and escaped."""
    method, template, _ = OPERATIONS[operation]
    names: dict[str, str] = {}
    if pool is not None:
        names["pool"] = quote(check_pool(pool), safe="")
    if session_id is not None:
        names["id"] = quote(check_session_id(session_id), safe="")
    return method, template.format(**names)


def _call(
    operation: str, parse: Callable[[httpx.Response], T], *, idempotent: bool, pool: str | None = None,
    session_id: str | None = None, **options: Any,
) -> _Call[T]:
    method, path = _route(operation, pool, session_id)
    return _Call(method, path, parse, idempotent, **options)


_MARKS = {"mark_good": "markGood", "mark_bad": "markBad", "retire": "retireSession"}


class _Base:
    """What both clients share: configuration, the calls, and turning answers into results or errors."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        timeout: float,
        retry_timeout: float,
    ) -> None:
        self.base_url = check_base_url(url)
        self.api_key = api_key if api_key is not None else (os.environ.get("SESSION_POOL_API_KEY") or None)
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self._headers = {"Accept": "application/json, application/problem+json"}
        if self.api_key:
            self._headers["Authorization"] = f"Bearer {self.api_key}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    # -- the calls: each takes its method and path from OPERATIONS ---------------------------------------

    @staticmethod
    def _c_healthz() -> _Call[dict[str, Any]]:
        return _call("healthz", _json(dict), idempotent=True)

    @staticmethod
    def _c_readyz() -> _Call[bool]:
        return _call("readyz", lambda r: r.status_code == 200, idempotent=True, ok=(200, 503))

    @staticmethod
    def _c_metrics() -> _Call[str]:
        return _call("metrics", lambda r: r.text, idempotent=True)

    @staticmethod
    def _c_openapi() -> _Call[str]:
        return _call("getOpenApi", lambda r: r.text, idempotent=True)

    @staticmethod
    def _c_list_pools() -> _Call[list[PoolStatus]]:
        return _call("listPools", _json(lambda d: [PoolStatus.from_json(p) for p in d["pools"]]), idempotent=True)

    @staticmethod
    def _c_put_pool(pool: str, config: PoolConfig | dict[str, Any] | None) -> _Call[PoolStatus]:
        body = config.to_json() if isinstance(config, PoolConfig) else (dict(config) if config else {})
        return _call("putPool", _json(PoolStatus.from_json), idempotent=True, pool=pool, json=body, ok=(200, 201))

    @staticmethod
    def _c_get_pool(pool: str) -> _Call[PoolStatus]:
        return _call("getPool", _json(PoolStatus.from_json), idempotent=True, pool=pool)

    @staticmethod
    def _c_delete_pool(pool: str) -> _Call[None]:
        return _call("deletePool", lambda r: None, idempotent=True, pool=pool, ok=(204,))

    @staticmethod
    def _c_acquire(pool: str, lease_secs: float | None, url: str | None, repeat_lost: bool) -> _Call[Session]:
        body: dict[str, Any] = {}
        if check_lease_secs(lease_secs) is not None:
            body["lease_secs"] = lease_secs
        if url is not None:
            body["url"] = check_page_url(url)
        # Not idempotent: a repeat may take a second session. `repeat_lost` (retry_lost_answers) accepts
        # that: the lease a lost answer took stays unused until it runs out.
        return _call("acquireSession", _json(Session.from_json), idempotent=repeat_lost, pool=pool, json=body)

    @staticmethod
    def _c_create_session(pool: str, fields: dict[str, Any]) -> _Call[Session]:
        body = {k: v for k, v in fields.items() if v is not None}
        if "id" in body:
            check_session_id(body["id"])
        if "cookies" in body:
            body["cookies"] = _cookies_json(body["cookies"])
        return _call("createSession", _json(Session.from_json), idempotent=False, pool=pool, json=body, ok=(201,))

    @staticmethod
    def _c_list_sessions(pool: str, state: str, limit: int, cursor: str | None) -> _Call[SessionList]:
        if state not in SESSION_STATES:
            raise InvalidArgument(f"state {state!r} is not one of {', '.join(SESSION_STATES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidArgument(f"limit {limit!r} is out of range: 1..1000")
        params: dict[str, Any] = {"state": state, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return _call("listSessions", _json(SessionList.from_json), idempotent=True, pool=pool, params=params)

    @staticmethod
    def _c_get_session(pool: str, session_id: str) -> _Call[Session]:
        return _call("getSession", _json(Session.from_json), idempotent=True, pool=pool, session_id=session_id)

    @staticmethod
    def _c_patch_session(pool: str, session_id: str, user_data: Any, cookies: Any) -> _Call[Session]:
        body: dict[str, Any] = {}
        if user_data is not None:
            body["user_data"] = user_data
        if cookies is not None:
            body["cookies"] = _cookies_json(cookies)
        return _call(
            "patchSession", _json(Session.from_json), idempotent=True, pool=pool, session_id=session_id, json=body
        )

    @staticmethod
    def _c_delete_session(pool: str, session_id: str) -> _Call[None]:
        return _call("deleteSession", lambda r: None, idempotent=True, pool=pool, session_id=session_id, ok=(204,))

    @staticmethod
    def _c_mark(what: str, pool: str, session_id: str, lease_id, url, set_cookie, cookies) -> _Call[Session]:
        body = _report_body(lease_id, url, set_cookie, cookies)
        call = _call(
            _MARKS[what], _json(Session.from_json), idempotent=what == "retire", pool=pool, session_id=session_id,
            json=body,
        )
        if isinstance(lease_id, Lease):
            call.lease_check = (_route("getSession", pool, session_id)[1], lease_id.expires_at, lambda s: s)
        return call

    @staticmethod
    def _c_release(pool: str, session_id: str, lease_id: str) -> _Call[Session]:
        if not isinstance(lease_id, str) or not lease_id:
            raise InvalidArgument(f"lease_id {lease_id!r} must be the non-empty lease id an acquire returned")

        def explain(error: Exception) -> Exception:
            if isinstance(error, LeaseMismatch):
                error.args = (
                    f"lease_mismatch: lease {lease_id!r} is not the current lease of session {session_id!r} in "
                    f"pool {pool!r}: it has ended (released, ended by a report, or run out) or was never its "
                    f"lease ({error.detail})",
                )
            return error

        # Idempotent: lease ids are never reused, so releasing one twice cannot end another lease.
        return _call(
            "releaseSession", _json(Session.from_json), idempotent=True, pool=pool, session_id=session_id,
            json={"lease_id": lease_id}, on_error=explain, mismatch_after_lost=_route("getSession", pool, session_id)[1],
        )

    @staticmethod
    def _c_status_code(
        pool, session_id, status_code, mark, lease_id, additional, ignore, url, set_cookie, cookies
    ) -> _Call[StatusCodeResult]:
        body: dict[str, Any] = {"status_code": check_status_code(status_code)}
        if additional:
            body["additional_blocked_status_codes"] = [check_status_code(c, "a blocked status code") for c in additional]
        if ignore:
            body["ignore_http_error_status_codes"] = [check_status_code(c, "an ignored status code") for c in ignore]
        if mark:
            body["mark"] = True
        body.update(_report_body(lease_id, url, set_cookie, cookies) or {})
        call = _call(
            "reportStatusCode", _json(StatusCodeResult.from_json), idempotent=not mark, pool=pool,
            session_id=session_id, json=body,
        )
        if isinstance(lease_id, Lease) and mark:

            def recovered(session: Session) -> StatusCodeResult:
                blocking = (set(session.blocked_status_codes) - set(ignore or ())) | set(additional or ())
                return StatusCodeResult(blocked=status_code in blocking, session=session)

            call.lease_check = (_route("getSession", pool, session_id)[1], lease_id.expires_at, recovered)
        return call

    @staticmethod
    def _c_store_cookies(pool: str, session_id: str, url: str, set_cookie: list[str]) -> _Call[Session]:
        body = _report_body(None, url, set_cookie, None)
        return _call(
            "storeCookies", _json(Session.from_json), idempotent=True, pool=pool, session_id=session_id, json=body
        )

    @staticmethod
    def _c_cookies_for_url(pool: str, session_id: str, url: str) -> _Call[CookiesForUrl]:
        return _call(
            "cookiesForUrl", _json(CookiesForUrl.from_json), idempotent=True, pool=pool, session_id=session_id,
            params={"url": check_page_url(url)},
        )

    @staticmethod
    def _c_export_pool(pool: str, format: str | None) -> _Call[dict[str, Any]]:  # noqa: A002
        if format not in (None, "crawlee"):
            raise InvalidArgument(f"format {format!r} is not known: None (this service's form) or 'crawlee'")
        return _call(
            "exportPool", _json(dict), idempotent=True, pool=pool, params={"format": format} if format else None
        )

    @staticmethod
    def _c_import_pool(pool: str, document: dict[str, Any]) -> _Call[ImportResult]:
        if not isinstance(document, dict):
            raise InvalidArgument("the import document must be a JSON object (a dict)")
        return _call("importPool", _json(ImportResult.from_json), idempotent=False, pool=pool, json=document)

    # -- answers ------------------------------------------------------------------------------------

    def _result(self, call: _Call[T], response: httpx.Response) -> T:
        url = f"{self.base_url}{call.path}"
        if response.status_code in call.ok:
            try:
                return call.parse(response)
            except (ValueError, KeyError, TypeError) as e:
                raise UnexpectedResponse(
                    f"{call.method} {url} answered {response.status_code} with a body that is not the "
                    f"session-pool API's ({type(e).__name__}: {e}); is the URL that of a session-pool service?",
                    status=response.status_code,
                    method=call.method,
                    url=url,
                ) from None
        raise self._error(call, response)

    def _error(self, call: _Call[Any], response: httpx.Response) -> Exception:
        url = f"{self.base_url}{call.path}"
        problem: Any = None
        if "json" in response.headers.get("content-type", ""):
            try:
                problem = response.json()
            except ValueError:
                problem = None
        if not isinstance(problem, dict) or "type" not in problem:
            return UnexpectedResponse(
                f"{call.method} {url} answered {response.status_code} "
                f"({response.headers.get('content-type', 'no content type')}) without a problem+json body; "
                f"is {self.base_url} a session-pool service?",
                status=response.status_code,
                method=call.method,
                url=url,
            )
        hint = None
        if problem.get("type") == "unauthorized":
            hint = (
                "the API key sent was not accepted"
                if self.api_key
                else "the service needs an API key: pass api_key= or set SESSION_POOL_API_KEY"
            )
        error: Exception = error_for_problem(
            problem,
            status=response.status_code,
            method=call.method,
            url=url,
            request_id=response.headers.get("x-request-id"),
            retry_after=_retry_after(response),
            hint=hint,
        )
        if call.on_error:
            error = call.on_error(error)
        return error

    def _unreachable(self, call: _Call[Any], error: Exception, attempts: int) -> ServiceUnavailable:
        url = f"{self.base_url}{call.path}"
        why = str(error) or type(error).__name__
        hint = (
            "" if self.base_url in _ANSWERED
            else f"; nothing has answered at {self.base_url} yet: is the service running there, and is the URL right?"
        )
        return ServiceUnavailable(
            f"could not reach session-pool at {self.base_url} ({call.method} {call.path}, {attempts} attempt"
            f"{'s' if attempts != 1 else ''}): {why}{hint}",
            method=call.method,
            url=url,
        )

    def _maybe_lost(self, call: _Call[Any], error: Exception) -> ServiceUnavailable:
        assert call.lease_check is not None
        why = str(error) or type(error).__name__
        return ServiceUnavailable(
            f"the answer to {call.method} {call.path} was lost ({why}) and the report may not have arrived: the "
            f"session no longer shows its lease, but that lease (until {call.lease_check[1].isoformat()}) may have "
            f"run out rather than been ended by the report; it is not sent again, as one that arrived would count "
            f"twice",
            method=call.method,
            url=f"{self.base_url}{call.path}",
        )

    def _retry_deadline(self, started: float, deadline: float) -> float:
        """Until when a connection error is retried. Once the service at this URL has answered in this
        process, until `deadline` (the service is restarting: wait for it); before that, for
        `_FIRST_CONTACT_SECS` at most, so that a wrong URL fails in seconds."""
        if self.base_url in _ANSWERED:
            return deadline
        return min(deadline, started + _FIRST_CONTACT_SECS)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


#: Base URLs that have answered (any HTTP answer) in this process: connection errors to them are a
#: restart to wait for, not a wrong URL.
_ANSWERED: set[str] = set()

#: How long connection errors are retried for a URL that has never answered.
_FIRST_CONTACT_SECS = 2.0

#: The connect timeout (seconds) when `timeout` is longer: an address that drops the connection attempt
#: fails in seconds, as a refused one does.
_CONNECT_TIMEOUT = 3.0


def _timeouts(timeout: float) -> httpx.Timeout:
    return httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT))


def _backoff(attempt: int) -> float:
    return min(2.0, 0.05 * (2**attempt)) * (0.5 + random.random() / 2)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAYBE_SENT = (httpx.ReadError, httpx.WriteError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError)


class _Retry(Exception):
    def __init__(self, delay: float, cause: Exception) -> None:
        self.delay = delay
        self.cause = cause


class _CheckLease(_Retry):
    """The answer to a lease-ending report was lost: read the session to learn whether it arrived."""


def _after_check(call: _Call[Any], session: Session, read_at: datetime | None) -> Any:
    """The result of a report whose answer was lost, from the session read afterwards (`read_at`: the
    service's `Date` of that read). `_RESEND` when sending it again is safe: the session still shows the
    lease (the report did not arrive), or it is retired (a report then changes nothing but its cookies,
    stored again as they were). `_UNKNOWN` when the read cannot tell: the lease is gone, but a lease also
    ends by running out, and the read was not early enough to rule that out."""
    assert call.lease_check is not None
    _, expires_at, recover = call.lease_check
    if session.leased_until is not None and session.leased_until == expires_at:
        return _RESEND
    if session.retired:
        return _RESEND
    # Before its end only a call carrying the lease id ends a lease (or retirement, handled above): the
    # lease gone while it still had time to run means the report ended it.
    if read_at is not None and read_at + _DATE_MARGIN <= expires_at:
        return recover(session)
    return _UNKNOWN


_RESEND = object()
_UNKNOWN = object()

#: How far before a lease's end the session read must be, by the service's `Date` (whole seconds,
#: cached by the server for up to a second), to prove that the lease did not simply run out.
_DATE_MARGIN = timedelta(seconds=2)


def _response_date(response: httpx.Response) -> datetime | None:
    try:
        date = parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError, IndexError):
        return None
    return date if date.tzinfo is not None else None


def _session_read(call: _Call[Any]) -> _Call[tuple[Session, datetime | None]]:
    """The GET of the session a lost report's lease check reads, with the service's `Date` of it."""
    assert call.lease_check is not None
    return _Call("GET", call.lease_check[0], lambda r: (Session.from_json(r.json()), _response_date(r)), True)


def _classify(
    base: _Base, call: _Call[Any], outcome: httpx.Response | Exception, attempt: int, started: float, deadline: float
) -> Any:
    """Decide on one attempt: return the result, raise the error, or raise `_Retry(delay)`."""
    now = time.monotonic()
    if isinstance(outcome, Exception):
        deadline = base._retry_deadline(started, deadline)
        retryable = isinstance(outcome, _NOT_SENT) or (call.idempotent and isinstance(outcome, _MAYBE_SENT))
        delay = _backoff(attempt)
        if retryable and now + delay < deadline:
            if isinstance(outcome, _MAYBE_SENT):
                call.answer_lost = True
            raise _Retry(delay, outcome)
        if call.lease_check and isinstance(outcome, _MAYBE_SENT) and now + delay < deadline:
            raise _CheckLease(delay, outcome)
        raise base._unreachable(call, outcome, attempt + 1) from None  # only TransportErrors get here
    response = outcome
    _ANSWERED.add(base.base_url)
    if response.status_code == 503 and response.status_code not in call.ok:
        error = base._error(call, response)
        if isinstance(error, NotReady):
            delay = error.retry_after if error.retry_after is not None else _backoff(attempt)
            delay = max(0.05, min(delay, 2.0))
            if now + delay < deadline:
                raise _Retry(delay, error)
        raise error
    return base._result(call, response)


# ---------------------------------------------------------------------------------------------------
# The sync client


class SessionPoolClient(_Base):
    """A synchronous client of one session-pool service, with one connection pool.

    `url` and `api_key` default to the `SESSION_POOL_URL` and `SESSION_POOL_API_KEY` environment
    variables. `timeout` bounds each HTTP request (seconds); `retry_timeout` bounds the retries of one
    call (see the module docstring for which calls are retried). Use it as a context manager, or call
    `close()`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry_timeout: float = 30.0,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retry_timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=_timeouts(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            trust_env=False,
        )

    def __enter__(self) -> SessionPoolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T], retry_timeout: float | None = None) -> T:
        started = time.monotonic()
        deadline = started + (self.retry_timeout if retry_timeout is None else retry_timeout)
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | Exception = self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as e:
                outcome = e
            except httpx.InvalidURL as e:
                raise InvalidArgument(f"bad URL for {call.method} {call.path}: {e}") from None
            try:
                return _classify(self, call, outcome, attempt, started, deadline)
            except LeaseMismatch:
                if not (call.answer_lost and call.mismatch_after_lost):
                    raise
                # An earlier attempt, whose answer was lost, ended the lease (or it ran out meanwhile).
                read: _Call[Any] = _Call("GET", call.mismatch_after_lost, _json(Session.from_json), True)
                return self._run(read, retry_timeout=max(0.0, deadline - time.monotonic()))
            except _CheckLease as check:
                time.sleep(check.delay)
                attempt += 1
                session, read_at = self._read_for_check(call, check.cause, attempt, deadline)
                result = _after_check(call, session, read_at)
                if result is _UNKNOWN:
                    raise self._maybe_lost(call, check.cause) from None
                if result is not _RESEND:
                    return result
            except _Retry as retry:
                time.sleep(retry.delay)
                attempt += 1

    def _read_for_check(
        self, call: _Call[Any], cause: Exception, attempts: int, deadline: float
    ) -> tuple[Session, datetime | None]:
        try:
            return self._run(_session_read(call), retry_timeout=max(0.0, deadline - time.monotonic()))
        except ApiError:
            raise  # the service answered (the session is gone, the key is refused, ...): that is the error
        except SessionPoolError:
            raise self._unreachable(call, cause, attempts) from None

    # Service
    def healthz(self) -> dict[str, Any]:
        """`GET /healthz` (idempotent): `{"status": "ok"}` while the process serves."""
        return self._run(self._c_healthz())

    def readyz(self) -> bool:
        """`GET /readyz` (idempotent): True once the state is restored, False while starting or stopping."""
        return self._run(self._c_readyz(), retry_timeout=0)

    def metrics(self) -> str:
        """`GET /metrics` (idempotent): the Prometheus text."""
        return self._run(self._c_metrics())

    def openapi(self) -> str:
        """`GET /openapi.yaml` (idempotent): the API description this build serves, as YAML text."""
        return self._run(self._c_openapi())

    # Pools
    def list_pools(self) -> list[PoolStatus]:
        """`GET /v1/pools` (idempotent): every pool, sorted by name."""
        return self._run(self._c_list_pools())

    def put_pool(self, pool: str, config: PoolConfig | dict[str, Any] | None = None) -> PoolStatus:
        """`PUT /v1/pools/{pool}` (idempotent): create or reconfigure; a field left out takes the server's
        default (PUT replaces)."""
        return self._run(self._c_put_pool(pool, config))

    def get_pool(self, pool: str) -> PoolStatus:
        """`GET /v1/pools/{pool}` (idempotent); `PoolNotFound` when it does not exist."""
        return self._run(self._c_get_pool(pool))

    def delete_pool(self, pool: str) -> None:
        """`DELETE /v1/pools/{pool}` (idempotent; a repeat after a lost answer may raise `PoolNotFound`)."""
        return self._run(self._c_delete_pool(pool))

    # Sessions
    def acquire(
        self, pool: str, *, lease_secs: float | None = None, url: str | None = None, wait_secs: float = 0.0,
        retry_lost_answers: bool = False,
    ) -> Session:
        """`POST /v1/pools/{pool}/acquire` (not idempotent: never repeated once the request may have
        arrived). With `lease_secs` the session is leased (`session.lease`); with `url` the answer carries
        `session.cookie_header` for that page. `wait_secs` > 0 waits that long at most for a session while
        the service answers `no_session_available`, honouring its `Retry-After`; then `NoSessionAvailable`
        is raised. A service that cannot be reached, or answers `not_ready`, is waited for up to the longer
        of `retry_timeout` and `wait_secs`. `retry_lost_answers=True` also repeats an acquire whose answer
        was lost (the connection broke after the request was sent), within that same time: a lease it may
        have taken stays unused until it runs out (`lease_secs`), which crawlers prefer to losing a page."""
        call = self._c_acquire(pool, lease_secs, url, retry_lost_answers)
        deadline = time.monotonic() + wait_secs
        retry_deadline = time.monotonic() + max(self.retry_timeout, wait_secs)
        while True:
            try:
                return self._run(call, retry_timeout=max(0.0, retry_deadline - time.monotonic()))
            except NoSessionAvailable as e:
                delay = _wait_delay(e, deadline)
                if delay is None:
                    raise
                time.sleep(delay)

    def create_session(
        self,
        pool: str,
        *,
        id: str | None = None,  # noqa: A002
        user_data: dict[str, Any] | None = None,
        cookies: list[Cookie] | list[dict[str, Any]] | dict[str, str] | None = None,
        proxy_url: str | None = None,
        max_age_secs: float | None = None,
        max_usage_count: int | None = None,
        max_error_score: float | None = None,
        error_score_decrement: float | None = None,
        blocked_status_codes: list[int] | None = None,
    ) -> Session:
        """`POST /v1/pools/{pool}/sessions` (not idempotent); `SessionExists` for an id the pool holds."""
        fields = {
            "id": id, "user_data": user_data, "cookies": cookies, "proxy_url": proxy_url, "max_age_secs": max_age_secs,
            "max_usage_count": max_usage_count, "max_error_score": max_error_score,
            "error_score_decrement": error_score_decrement, "blocked_status_codes": blocked_status_codes,
        }
        return self._run(self._c_create_session(pool, fields))

    def list_sessions(
        self, pool: str, *, state: str = "all", limit: int = 100, cursor: str | None = None
    ) -> SessionList:
        """`GET /v1/pools/{pool}/sessions` (idempotent): one page, in id order."""
        return self._run(self._c_list_sessions(pool, state, limit, cursor))

    def iter_sessions(self, pool: str, *, state: str = "all", page_size: int = 1000) -> Iterator[Session]:
        """Every session of the pool, following `next_cursor` (built on `list_sessions`)."""
        cursor = None
        while True:
            page = self.list_sessions(pool, state=state, limit=page_size, cursor=cursor)
            yield from page.sessions
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_session(self, pool: str, session_id: str) -> Session:
        """`GET /v1/pools/{pool}/sessions/{id}` (idempotent); retired sessions too, until purged."""
        return self._run(self._c_get_session(pool, session_id))

    def patch_session(
        self, pool: str, session_id: str, *, user_data: dict[str, Any] | None = None, cookies: Any = None
    ) -> Session:
        """`PATCH /v1/pools/{pool}/sessions/{id}` (idempotent): merge-patch `user_data`, upsert `cookies`."""
        return self._run(self._c_patch_session(pool, session_id, user_data, cookies))

    def delete_session(self, pool: str, session_id: str) -> None:
        """`DELETE /v1/pools/{pool}/sessions/{id}` (idempotent)."""
        return self._run(self._c_delete_session(pool, session_id))

    def mark_good(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """`POST .../mark_good` (not idempotent). With the current `lease_id` it also ends the lease;
        `url` + `set_cookie` and/or `cookies` store the page's cookies in the same call. Give the lease as
        the `Lease` object (`session.lease`) and a lost answer is recovered safely (module docstring)."""
        return self._run(self._c_mark("mark_good", pool, session_id, lease_id, url, set_cookie, cookies))

    def mark_bad(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """`POST .../mark_bad` (not idempotent); arguments as `mark_good`."""
        return self._run(self._c_mark("mark_bad", pool, session_id, lease_id, url, set_cookie, cookies))

    def retire(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """`POST .../retire` (idempotent: retiring twice is retiring once); arguments as `mark_good`."""
        return self._run(self._c_mark("retire", pool, session_id, lease_id, url, set_cookie, cookies))

    def release(self, pool: str, session_id: str, lease_id: str) -> Session:
        """`POST .../release` (idempotent: lease ids are never reused): end the lease. `LeaseMismatch`
        when the lease has already ended or is not this session's, except on a repeat after a lost answer,
        which returns the session read afterwards (the lost attempt ended the lease, or it ran out)."""
        return self._run(self._c_release(pool, session_id, lease_id))

    def report_status_code(
        self, pool: str, session_id: str, status_code: int, *, mark: bool = False, lease_id: str | Lease | None = None,
        additional_blocked_status_codes: list[int] | None = None,
        ignore_http_error_status_codes: list[int] | None = None,
        url: str | None = None, set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> StatusCodeResult:
        """`POST .../status_code`: retires the session when the code blocks it; with `mark` a code that does
        not block counts as mark_good (200..399) or mark_bad. Idempotent without `mark` only."""
        return self._run(self._c_status_code(
            pool, session_id, status_code, mark, lease_id, additional_blocked_status_codes,
            ignore_http_error_status_codes, url, set_cookie, cookies,
        ))

    # Cookies
    def store_cookies(self, pool: str, session_id: str, url: str, set_cookie: list[str]) -> Session:
        """`POST .../cookies` (idempotent): store a response's Set-Cookie headers as a browser would."""
        return self._run(self._c_store_cookies(pool, session_id, url, set_cookie))

    def cookies_for_url(self, pool: str, session_id: str, url: str) -> CookiesForUrl:
        """`GET .../cookies?url=` (idempotent): what a browser would send to `url`."""
        return self._run(self._c_cookies_for_url(pool, session_id, url))

    # Transfer
    def export_pool(self, pool: str, *, format: str | None = None) -> dict[str, Any]:  # noqa: A002
        """`GET /v1/pools/{pool}/export` (idempotent): the service's own form, or `format="crawlee"`."""
        return self._run(self._c_export_pool(pool, format))

    def import_pool(self, pool: str, document: dict[str, Any]) -> ImportResult:
        """`POST /v1/pools/{pool}/import` (not repeated: an import that arrived twice reports skips)."""
        return self._run(self._c_import_pool(pool, document))


def _wait_delay(error: NoSessionAvailable, deadline: float) -> float | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    delay = error.retry_after if error.retry_after is not None else 1.0
    # Wait what the service asks for, spread by up to 10% so that waiting crawlers do not come back as
    # one herd; never past the caller's deadline (then one last look at it).
    return max(0.01, min(delay * (1 + random.random() / 10), remaining))


# ---------------------------------------------------------------------------------------------------
# The async client


class AsyncSessionPoolClient(_Base):
    """The asyncio twin of `SessionPoolClient`: the same methods, as coroutines. Use it with
    `async with`, or `await client.aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry_timeout: float = 30.0,
        max_connections: int = 50,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retry_timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=_timeouts(timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            trust_env=False,
        )

    async def __aenter__(self) -> AsyncSessionPoolClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T], retry_timeout: float | None = None) -> T:
        started = time.monotonic()
        deadline = started + (self.retry_timeout if retry_timeout is None else retry_timeout)
        attempt = 0
        while True:
            try:
                outcome: httpx.Response | Exception = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params
                )
            except httpx.TransportError as e:
                outcome = e
            except httpx.InvalidURL as e:
                raise InvalidArgument(f"bad URL for {call.method} {call.path}: {e}") from None
            try:
                return _classify(self, call, outcome, attempt, started, deadline)
            except LeaseMismatch:
                if not (call.answer_lost and call.mismatch_after_lost):
                    raise
                # An earlier attempt, whose answer was lost, ended the lease (or it ran out meanwhile).
                read: _Call[Any] = _Call("GET", call.mismatch_after_lost, _json(Session.from_json), True)
                return await self._run(read, retry_timeout=max(0.0, deadline - time.monotonic()))
            except _CheckLease as check:
                await asyncio.sleep(check.delay)
                attempt += 1
                session, read_at = await self._read_for_check(call, check.cause, attempt, deadline)
                result = _after_check(call, session, read_at)
                if result is _UNKNOWN:
                    raise self._maybe_lost(call, check.cause) from None
                if result is not _RESEND:
                    return result
            except _Retry as retry:
                await asyncio.sleep(retry.delay)
                attempt += 1

    async def _read_for_check(
        self, call: _Call[Any], cause: Exception, attempts: int, deadline: float
    ) -> tuple[Session, datetime | None]:
        try:
            return await self._run(_session_read(call), retry_timeout=max(0.0, deadline - time.monotonic()))
        except ApiError:
            raise  # the service answered (the session is gone, the key is refused, ...): that is the error
        except SessionPoolError:
            raise self._unreachable(call, cause, attempts) from None

    async def healthz(self) -> dict[str, Any]:
        """See `SessionPoolClient.healthz`."""
        return await self._run(self._c_healthz())

    async def readyz(self) -> bool:
        """See `SessionPoolClient.readyz`."""
        return await self._run(self._c_readyz(), retry_timeout=0)

    async def metrics(self) -> str:
        """See `SessionPoolClient.metrics`."""
        return await self._run(self._c_metrics())

    async def openapi(self) -> str:
        """See `SessionPoolClient.openapi`."""
        return await self._run(self._c_openapi())

    async def list_pools(self) -> list[PoolStatus]:
        """See `SessionPoolClient.list_pools`."""
        return await self._run(self._c_list_pools())

    async def put_pool(self, pool: str, config: PoolConfig | dict[str, Any] | None = None) -> PoolStatus:
        """See `SessionPoolClient.put_pool`."""
        return await self._run(self._c_put_pool(pool, config))

    async def get_pool(self, pool: str) -> PoolStatus:
        """See `SessionPoolClient.get_pool`."""
        return await self._run(self._c_get_pool(pool))

    async def delete_pool(self, pool: str) -> None:
        """See `SessionPoolClient.delete_pool`."""
        return await self._run(self._c_delete_pool(pool))

    async def acquire(
        self, pool: str, *, lease_secs: float | None = None, url: str | None = None, wait_secs: float = 0.0,
        retry_lost_answers: bool = False,
    ) -> Session:
        """See `SessionPoolClient.acquire`."""
        call = self._c_acquire(pool, lease_secs, url, retry_lost_answers)
        deadline = time.monotonic() + wait_secs
        retry_deadline = time.monotonic() + max(self.retry_timeout, wait_secs)
        while True:
            try:
                return await self._run(call, retry_timeout=max(0.0, retry_deadline - time.monotonic()))
            except NoSessionAvailable as e:
                delay = _wait_delay(e, deadline)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def create_session(
        self,
        pool: str,
        *,
        id: str | None = None,  # noqa: A002
        user_data: dict[str, Any] | None = None,
        cookies: list[Cookie] | list[dict[str, Any]] | dict[str, str] | None = None,
        proxy_url: str | None = None,
        max_age_secs: float | None = None,
        max_usage_count: int | None = None,
        max_error_score: float | None = None,
        error_score_decrement: float | None = None,
        blocked_status_codes: list[int] | None = None,
    ) -> Session:
        """See `SessionPoolClient.create_session`."""
        fields = {
            "id": id, "user_data": user_data, "cookies": cookies, "proxy_url": proxy_url, "max_age_secs": max_age_secs,
            "max_usage_count": max_usage_count, "max_error_score": max_error_score,
            "error_score_decrement": error_score_decrement, "blocked_status_codes": blocked_status_codes,
        }
        return await self._run(self._c_create_session(pool, fields))

    async def list_sessions(
        self, pool: str, *, state: str = "all", limit: int = 100, cursor: str | None = None
    ) -> SessionList:
        """See `SessionPoolClient.list_sessions`."""
        return await self._run(self._c_list_sessions(pool, state, limit, cursor))

    async def iter_sessions(self, pool: str, *, state: str = "all", page_size: int = 1000) -> AsyncIterator[Session]:
        """See `SessionPoolClient.iter_sessions`."""
        cursor = None
        while True:
            page = await self.list_sessions(pool, state=state, limit=page_size, cursor=cursor)
            for session in page.sessions:
                yield session
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get_session(self, pool: str, session_id: str) -> Session:
        """See `SessionPoolClient.get_session`."""
        return await self._run(self._c_get_session(pool, session_id))

    async def patch_session(
        self, pool: str, session_id: str, *, user_data: dict[str, Any] | None = None, cookies: Any = None
    ) -> Session:
        """See `SessionPoolClient.patch_session`."""
        return await self._run(self._c_patch_session(pool, session_id, user_data, cookies))

    async def delete_session(self, pool: str, session_id: str) -> None:
        """See `SessionPoolClient.delete_session`."""
        return await self._run(self._c_delete_session(pool, session_id))

    async def mark_good(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """See `SessionPoolClient.mark_good`."""
        return await self._run(self._c_mark("mark_good", pool, session_id, lease_id, url, set_cookie, cookies))

    async def mark_bad(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """See `SessionPoolClient.mark_bad`."""
        return await self._run(self._c_mark("mark_bad", pool, session_id, lease_id, url, set_cookie, cookies))

    async def retire(
        self, pool: str, session_id: str, *, lease_id: str | Lease | None = None, url: str | None = None,
        set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> Session:
        """See `SessionPoolClient.retire`."""
        return await self._run(self._c_mark("retire", pool, session_id, lease_id, url, set_cookie, cookies))

    async def release(self, pool: str, session_id: str, lease_id: str) -> Session:
        """See `SessionPoolClient.release`."""
        return await self._run(self._c_release(pool, session_id, lease_id))

    async def report_status_code(
        self, pool: str, session_id: str, status_code: int, *, mark: bool = False, lease_id: str | Lease | None = None,
        additional_blocked_status_codes: list[int] | None = None,
        ignore_http_error_status_codes: list[int] | None = None,
        url: str | None = None, set_cookie: list[str] | None = None, cookies: Any = None,
    ) -> StatusCodeResult:
        """See `SessionPoolClient.report_status_code`."""
        return await self._run(self._c_status_code(
            pool, session_id, status_code, mark, lease_id, additional_blocked_status_codes,
            ignore_http_error_status_codes, url, set_cookie, cookies,
        ))

    async def store_cookies(self, pool: str, session_id: str, url: str, set_cookie: list[str]) -> Session:
        """See `SessionPoolClient.store_cookies`."""
        return await self._run(self._c_store_cookies(pool, session_id, url, set_cookie))

    async def cookies_for_url(self, pool: str, session_id: str, url: str) -> CookiesForUrl:
        """See `SessionPoolClient.cookies_for_url`."""
        return await self._run(self._c_cookies_for_url(pool, session_id, url))

    async def export_pool(self, pool: str, *, format: str | None = None) -> dict[str, Any]:  # noqa: A002
        """See `SessionPoolClient.export_pool`."""
        return await self._run(self._c_export_pool(pool, format))

    async def import_pool(self, pool: str, document: dict[str, Any]) -> ImportResult:
        """See `SessionPoolClient.import_pool`."""
        return await self._run(self._c_import_pool(pool, document))
