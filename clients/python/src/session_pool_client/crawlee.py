"""Crawlee for Python (1.11) on the shared pool: `RemoteSessionPool` is a drop-in
`crawlee.sessions.SessionPool`, `SessionProxyConfiguration` gives each request its session's sticky proxy.

    from crawlee.crawlers import ParselCrawler
    from session_pool_client.crawlee import RemoteSessionPool, SessionProxyConfiguration

    pool = RemoteSessionPool(pool="shop", url="http://127.0.0.1:8080")
    crawler = ParselCrawler(session_pool=pool, proxy_configuration=SessionProxyConfiguration(pool))

Per page it makes two service calls: `get_session()` acquires a session with a lease (the answer carries
the session's whole cookie jar), and the one report Crawlee makes afterwards (`mark_good`, `mark_bad`,
`retire`, or a blocked status code) ends the lease and stores the cookies the site set, in one call.
Those reports are sent at once, in the background and in order per session, so Crawlee's synchronous
`mark_*` methods never block the event loop (called from another thread, they hand the report to the
pool's loop). Cookies the site deleted (an expired `Set-Cookie`, a cookie removed from the session's
jar, or from PlaywrightCrawler's browser) are sent as expired, so the service's jar stops sending them too. `async with` / `__aexit__`
(which the crawler runs at the end) waits for what is still pending, then releases the leases of
sessions that were acquired and never reported. A report that fails is logged at warning with its
session id and kept in `report_errors` (`report_error_count` counts them all).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from crawlee.proxy_configuration import ProxyConfiguration
from crawlee.sessions import Session, SessionPool
from crawlee.sessions._cookies import SessionCookies
from crawlee.sessions._models import SessionPoolModel

from . import _models
from ._client import AsyncSessionPoolClient, SessionPoolClient, check_base_url, check_lease_secs, check_pool
from ._errors import InvalidArgument, InvalidRequest, LeaseMismatch, PoolNotFound, SessionNotFound

if TYPE_CHECKING:
    from types import TracebackType

    from crawlee import Request
    from crawlee.sessions._cookies import CookieParam, PlaywrightCookieParam

__all__ = ["RemoteSession", "RemoteSessionPool", "ReportError", "SessionProxyConfiguration"]

logger = logging.getLogger(__name__)

_UNSET: Any = object()

# Crawlee `Session` arguments that are pool settings in the service; any other argument of
# `create_session_settings` (user_data, cookies, ...) is per session, so such sessions are made here.
_SETTING_ARGS = {"max_age", "max_error_score", "error_score_decrement", "max_usage_count", "blocked_status_codes"}

_CookieKey = tuple[str, str, str]

#: Timeout (seconds) of the blocking calls Crawlee's synchronous API makes; they are never retried.
_SYNC_TIMEOUT = 2.0

#: How many failed reports `report_errors` keeps (the most recent).
_KEPT_ERRORS = 1000


_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_COOKIE_VALUE = re.compile(r"^[^;\x00-\x1f\x7f-\x9f]*$")
_COOKIE_DOMAIN = re.compile(r"^[^;\s\x00-\x1f\x7f-\xa0]*$")
_COOKIE_PATH = re.compile(r"^/[^;\x00-\x1f\x7f-\x9f]*$")


def _storable(cookie: Mapping[str, Any]) -> bool:
    """Whether the service takes this cookie (its Cookie schema). Python's cookie jar keeps names and
    values a browser would refuse; sending one would make the service refuse the whole report."""
    return bool(
        _COOKIE_NAME.match(cookie["name"])
        and _COOKIE_VALUE.match(cookie.get("value", ""))
        and _COOKIE_DOMAIN.match(cookie.get("domain", ""))
        and _COOKIE_PATH.match(cookie.get("path", "/"))
    )


def _expired(cookie: Mapping[str, Any], now: float) -> bool:
    expires = cookie.get("expires")
    return expires is not None and expires <= now


def _cookie_state(session: Session) -> dict[_CookieKey, dict[str, Any]]:
    """The session's live cookies as the service would store them, by (domain, path, name)."""
    now = time.time()
    return {
        (c.get("domain", ""), c.get("path", "/"), c["name"]): dict(c)
        for c in session.cookies.get_cookies_as_dicts()
        if _storable(c) and not _expired(c, now)
    }


#: `expires` of a cookie sent to delete one: long past, so the service's jar never sends it again.
_DELETED = 0


@dataclass(frozen=True)
class ReportError:
    """A report of a session that did not reach the service (or that the service refused)."""

    session_id: str
    #: `mark_good`, `mark_bad`, `retire`, `user_data` (its PATCH), or on exit `release` or `status_code`
    #: (a session found blocked and never reported)
    kind: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.kind} of session {self.session_id}: {self.error}"


class _BrowserSyncedCookies(SessionCookies):
    """A session's cookies that take a browser's as they are now. PlaywrightCrawler loads the session's
    cookies into the page's browser context and afterwards hands back every cookie of that context:
    one missing there was deleted (by the site or its page's script), so it leaves the session's jar
    too, and the next report deletes it in the service. Crawlee's own jar only merges them."""

    def set_cookies_from_playwright_format(self, pw_cookies: list[PlaywrightCookieParam]) -> None:
        self.jar.clear()
        super().set_cookies_from_playwright_format(pw_cookies)


class RemoteSession(Session):
    """A Crawlee `Session` whose marks reach the service.

    The counters are the service's at acquire time and follow Crawlee's formulas locally afterwards,
    so Crawlee's own checks (`is_usable`, `is_blocked_status_code`) answer as before; the service's
    answer is what every other process sees. `mark_good`, `mark_bad` and `retire` return at once: the
    report (with the lease, and the cookies the site set since the acquire) is queued and sent in order.
    """

    def __init__(self, *, remote_pool: RemoteSessionPool, remote: _models.Session) -> None:
        now = time.time()
        super().__init__(
            id=remote.id,
            max_age=timedelta(seconds=remote.max_age_secs),
            user_data=remote.user_data,
            max_error_score=remote.max_error_score,
            error_score_decrement=remote.error_score_decrement,
            created_at=remote.created_at,
            usage_count=remote.usage_count,
            max_usage_count=remote.max_usage_count,
            error_score=remote.error_score,
            # CookieParam's keys; a cookie the service holds as expired (deleted) is not loaded
            cookies=cast("list[CookieParam]", [c.to_json() for c in remote.cookies if not _expired(c.to_json(), now)]),
        )
        self._cookies = _BrowserSyncedCookies(self._cookies.jar)
        # An empty list blocks nothing in the service; Crawlee's constructor would read it as "defaults".
        self._blocked_status_codes = set(remote.blocked_status_codes)
        self._remote_pool = remote_pool
        self._lease = remote.lease
        self._proxy_url = remote.proxy_url
        self._reported_cookies = _cookie_state(self)
        self._reported_user_data = copy.deepcopy(dict(remote.user_data))
        self._blocked_by: tuple[int, set[int]] | None = None

    @property
    def proxy_url(self) -> str | None:
        """The session's sticky proxy URL in the service (None: no proxy)."""
        return self._proxy_url

    @property
    def lease_id(self) -> str | None:
        """The lease this session holds; its first report ends it (None from then on, and for a session
        got by id, which is not leased)."""
        return self._lease.id if self._lease else None

    def _cookies_changed(self) -> list[dict[str, Any]]:
        """Cookies set or changed since the last report, and the ones deleted since (the site expired
        them, or they were removed from the jar) as expired cookies, which the service's jar drops."""
        now = _cookie_state(self)
        changed = [c for key, c in now.items() if self._reported_cookies.get(key) != c]
        deleted = [{**c, "value": "", "expires": _DELETED} for key, c in self._reported_cookies.items() if key not in now]
        self._reported_cookies = now
        return changed + deleted

    def _user_data_patch(self) -> dict[str, Any] | None:
        """A JSON merge patch from the user data last reported to what it is now (None: unchanged)."""
        now = copy.deepcopy(dict(self.user_data))
        old = self._reported_user_data
        patch: dict[str, Any] = {k: v for k, v in now.items() if k not in old or old[k] != v}
        patch.update({k: None for k in old if k not in now})
        self._reported_user_data = now
        return patch or None

    def _retire_locally(self) -> None:
        if not self.is_usable:
            self._error_score = max(self._error_score, self._max_error_score)

    def mark_good(self) -> None:
        """Crawlee's mark_good, and the same report to the service (in the background)."""
        self._usage_count += 1
        if self._error_score > 0:
            self._error_score = max(0, self._error_score - self._error_score_decrement)
        self._retire_locally()
        self._remote_pool._report(self, "mark_good")

    def mark_bad(self) -> None:
        """Crawlee's mark_bad, and the same report to the service (in the background)."""
        self._error_score += 1
        self._usage_count += 1
        self._retire_locally()
        self._remote_pool._report(self, "mark_bad")

    def retire(self) -> None:
        """Crawlee's retire, for everyone: the service retires the session (as `blocked_status_code` when
        the crawler found a blocking status code, else `retired`)."""
        self._error_score += self._max_error_score
        self._remote_pool._report(self, "retire")

    def is_blocked_status_code(self, *, status_code: int, ignore_http_error_status_codes: set[int] | None = None) -> bool:
        blocked = super().is_blocked_status_code(
            status_code=status_code, ignore_http_error_status_codes=ignore_http_error_status_codes
        )
        if blocked:
            # The crawler retires the session next; the report then says which code blocked it.
            self._blocked_by = (status_code, set(ignore_http_error_status_codes or ()))
        return blocked


class RemoteSessionPool(SessionPool):
    """A `crawlee.sessions.SessionPool` whose sessions live in a session-pool service, shared by every
    crawler that names the same pool.

    It takes SessionPool's own arguments plus `url`, `pool`, `api_key` and `lease_secs`:

    - `max_pool_size` and `create_session_settings` given explicitly become the pool's configuration
      in the service (merged into what it holds); left out, the service's configuration stays as it is.
    - `create_session_function` (or `create_session_settings` with per-session fields such as
      `user_data`) makes sessions here and creates them in the service, topping the pool up to its
      `max_pool_size` (one extra call per `get_session`).
    - `persistence_enabled`, `persist_state_kvs_name`, `persist_state_key` are accepted and ignored:
      the service persists the pool.
    - `fill_on_start`: fill the pool up to `max_pool_size` when entered, as Crawlee does (default: when
      `max_pool_size` was given).
    - `acquire_timeout_secs`: how long `get_session()` waits for a free session when every usable one is
      leased and the pool is full (or the service restarts), honouring the service's `Retry-After`.

    `session_count`, `usable_session_count`, `retired_session_count`, `add_session` and `get_state` are
    synchronous in Crawlee, so they make a blocking call to the service, bounded to 2 seconds and never
    retried, so that they cannot hold the event loop for long; in async code prefer
    `await pool.get_status()`. The sessions' `mark_good`, `mark_bad` and `retire` never block. `reset_store()` does nothing: the pool is shared, and deleting it would
    take every other crawler's sessions.
    """

    def __init__(
        self,
        *,
        max_pool_size: int = _UNSET,
        create_session_settings: dict | None = None,
        create_session_function: Callable[[], Session] | None = None,
        event_manager: Any = None,
        persistence_enabled: bool = False,
        persist_state_kvs_name: str | None = None,
        persist_state_key: str = "CRAWLEE_SESSION_POOL_STATE",
        url: str | None = None,
        pool: str = "default",
        api_key: str | None = None,
        lease_secs: float = 60.0,
        acquire_timeout_secs: float = 120.0,
        fill_on_start: bool | None = None,
        timeout: float = 10.0,
        retry_timeout: float = 60.0,
    ) -> None:
        explicit_size = max_pool_size is not _UNSET
        super().__init__(
            max_pool_size=max_pool_size if explicit_size else 1000,
            create_session_settings=create_session_settings,
            create_session_function=create_session_function,
            event_manager=event_manager,
            persistence_enabled=False,
        )
        if explicit_size and (isinstance(max_pool_size, bool) or not isinstance(max_pool_size, int) or max_pool_size < 0):
            raise InvalidArgument(f"max_pool_size {max_pool_size!r} must be an integer >= 0")
        self._pool = check_pool(pool)
        self._lease_secs = check_lease_secs(lease_secs)
        self._acquire_timeout = acquire_timeout_secs
        self._explicit_size = explicit_size
        self._fill_on_start = explicit_size if fill_on_start is None else fill_on_start
        settings = dict(create_session_settings or {})
        self._pool_settings = {k: v for k, v in settings.items() if k in _SETTING_ARGS}
        self._makes_sessions = create_session_function is not None or any(k not in _SETTING_ARGS for k in settings)
        self._url, self._api_key, self._timeout, self._retry_timeout = url, api_key, timeout, retry_timeout
        # Fail now on a bad URL setting, not at the first page.
        self._client: AsyncSessionPoolClient | None = None
        self._sync_client: SessionPoolClient | None = None
        check_base_url(url)  # SESSION_POOL_URL when url is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        # Sessions acquired with a lease and not reported yet, by lease id: released on exit.
        self._unreported: dict[str, RemoteSession] = {}
        # Crawlee's mark methods may run on other threads: this guards `_active`, `_closing` and
        # `_unreported` between them and the loop. Once `_closing`, reports are refused (RuntimeError);
        # every report handed over before that is sent before the client closes.
        self._lock = threading.Lock()
        self._closing = False
        self._proxy_urls: dict[str, str | None] = {}
        #: The most recent reports that did not reach the service (at most `_KEPT_ERRORS`).
        self.report_errors: list[ReportError] = []
        #: Every report that did not reach the service.
        self.report_error_count = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pool={self._pool!r} active={self._active}>"

    @property
    def pool(self) -> str:
        """The name of the pool in the service."""
        return self._pool

    @property
    def client(self) -> AsyncSessionPoolClient:
        """The async client this pool uses (while active)."""
        self._require_active()
        assert self._client is not None
        return self._client

    def _new_sync_client(self) -> SessionPoolClient:
        # Crawlee's synchronous API runs on the event loop: a short timeout and no retries bound how long
        # it can hold the loop.
        return SessionPoolClient(
            self._url, api_key=self._api_key, timeout=min(self._timeout, _SYNC_TIMEOUT), retry_timeout=0
        )

    def _require_active(self) -> None:
        if not self._active:
            raise RuntimeError(f"The {type(self).__name__} is not active.")

    def _sync(self) -> SessionPoolClient:
        self._require_active()
        if self._sync_client is None:
            self._sync_client = self._new_sync_client()
        return self._sync_client

    # -- the pool's configuration ----------------------------------------------------------------------

    def _wanted_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self._pool_settings.items():
            if key == "max_age":
                out["max_age_secs"] = value.total_seconds() if isinstance(value, timedelta) else float(value)
            else:
                out[key] = list(value) if key == "blocked_status_codes" else value
        return out

    async def _configure(self) -> _models.PoolStatus | None:
        assert self._client is not None
        wanted = self._wanted_settings()
        try:
            status: _models.PoolStatus | None = await self._client.get_pool(self._pool)
        except PoolNotFound:
            status = None
        if not self._explicit_size and not wanted:
            return status
        current = status.raw["config"] if status else {}
        config = {
            "max_pool_size": self._max_pool_size if self._explicit_size else current.get("max_pool_size"),
            "session": {**current.get("session", {}), **wanted},
            "proxy_urls": current.get("proxy_urls"),
            "proxy_url_template": current.get("proxy_url_template"),
        }
        config = {k: v for k, v in config.items() if v is not None}
        if status is not None and all(current.get(k) == v for k, v in config.items()):
            return status
        return await self._client.put_pool(self._pool, config)

    async def _fill(self, status: _models.PoolStatus | None) -> None:
        assert self._client is not None
        size = status.config.max_pool_size if status and status.config.max_pool_size is not None else self._max_pool_size
        usable = status.usable_session_count if status else 0
        missing = max(0, (size or 0) - usable)
        if not missing:
            return
        if self._makes_sessions:
            for _ in range(missing):
                await self._create_one()
        else:
            # An acquire without a lease creates one session while the pool is below its size and never
            # past it, so several crawlers filling at once do not overfill.
            for _ in range(missing):
                await self._client.acquire(self._pool)

    def _make_local(self) -> Session:
        if self._create_session_function:
            return self._create_session_function()
        return Session(**self._session_settings)

    async def _create_one(self) -> None:
        assert self._client is not None
        session = self._make_local()
        state = session.get_state(as_dict=False)
        await self._client.create_session(
            self._pool,
            id=session.id,
            user_data=dict(session.user_data),
            cookies=[dict(c) for c in session.cookies.get_cookies_as_dicts() if _storable(c)],
            max_age_secs=state.max_age.total_seconds(),
            max_usage_count=state.max_usage_count,
            max_error_score=state.max_error_score,
            error_score_decrement=state.error_score_decrement,
            blocked_status_codes=sorted(state.blocked_status_codes),
        )

    # -- context ----------------------------------------------------------------------------------------

    async def __aenter__(self) -> RemoteSessionPool:
        if self._active:
            raise RuntimeError(f"The {type(self).__name__} is already active.")
        client = AsyncSessionPoolClient(
            self._url, api_key=self._api_key, timeout=self._timeout, retry_timeout=self._retry_timeout
        )
        try:
            status = await self._configure_with(client)
            if self._fill_on_start:
                await self._fill(status)
        except BaseException:
            await client.aclose()
            self._client = None
            raise
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._closing = False
            self._active = True
        return self

    async def _configure_with(self, client: AsyncSessionPoolClient) -> _models.PoolStatus | None:
        self._client = client
        return await self._configure()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        exc_traceback: TracebackType | None,
    ) -> None:
        if not self._active:
            raise RuntimeError(f"The {type(self).__name__} is not active.")
        try:
            await self.flush()
            await self._release_unreported()
            with self._lock:
                self._closing = True
            await self.flush()  # the reports handed over meanwhile, from other threads
        finally:
            with self._lock:
                self._active = False
                self._closing = True
                self._loop = None
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            if self._sync_client is not None:
                self._sync_client.close()
                self._sync_client = None

    # -- Crawlee's API -----------------------------------------------------------------------------------

    @property
    def session_count(self) -> int:
        """Sessions the service holds in this pool, retired ones not yet purged included (a blocking call)."""
        return self._sync().get_pool(self._pool).session_count

    @property
    def usable_session_count(self) -> int:
        """Usable sessions in the service's pool (a blocking call)."""
        return self._sync().get_pool(self._pool).usable_session_count

    @property
    def retired_session_count(self) -> int:
        """Sessions of the service's pool that are no longer usable (a blocking call)."""
        return self._sync().get_pool(self._pool).retired_session_count

    async def get_status(self) -> _models.PoolStatus:
        """The pool's configuration and counts, without blocking the event loop."""
        self._require_active()
        assert self._client is not None
        return await self._client.get_pool(self._pool)

    @overload
    def get_state(self, *, as_dict: Literal[True]) -> dict: ...

    @overload
    def get_state(self, *, as_dict: Literal[False]) -> SessionPoolModel: ...

    def get_state(self, *, as_dict: bool = False) -> SessionPoolModel | dict:
        """The pool as Crawlee's `SessionPoolModel`, from the service's Crawlee export (a blocking call)."""
        model = SessionPoolModel.model_validate(self._sync().export_pool(self._pool, format="crawlee"))
        return model.model_dump() if as_dict else model

    def add_session(self, session: Session) -> None:
        """Add a session made outside the pool, with its counters, user data and cookies (a blocking call).
        A session the pool already holds is left as it is, with a warning, as in Crawlee."""
        client = self._sync()
        document: dict[str, Any] = {
            "sessions": [session.get_state(as_dict=False).model_dump(mode="json", by_alias=True)],
        }
        if self._explicit_size:
            # Only a size the caller gave: Crawlee's default would replace the operator's for a new pool.
            document["maxPoolSize"] = self._max_pool_size
        result = client.import_pool(self._pool, document)
        if result.skipped:
            logger.warning(f"Session with ID {session.id} already exists in the pool.")

    async def get_session(self) -> Session:
        """Acquire a usable session with a lease (waiting up to `acquire_timeout_secs` for one)."""
        self._require_active()
        assert self._client is not None
        if self._makes_sessions:
            status = await self._client.get_pool(self._pool)
            if status.config.max_pool_size is not None and status.usable_session_count < status.config.max_pool_size:
                await self._create_one()
        remote = await self._client.acquire(
            self._pool, lease_secs=self._lease_secs, wait_secs=self._acquire_timeout, retry_lost_answers=True
        )
        self._proxy_urls[remote.id] = remote.proxy_url
        session = RemoteSession(remote_pool=self, remote=remote)
        if remote.lease is not None:
            with self._lock:
                self._unreported[remote.lease.id] = session
        return session

    async def get_session_by_id(self, session_id: str) -> Session | None:
        """The session with this id when it exists and is usable, else None (with a warning), as in
        Crawlee. It is not leased: the service leases only what acquire hands out."""
        self._require_active()
        assert self._client is not None
        try:
            remote = await self._client.get_session(self._pool, session_id)
        except (SessionNotFound, InvalidArgument):
            logger.warning(f"Session with ID {session_id} not found.")
            return None
        if not remote.is_usable:
            logger.warning(f"Session with ID {session_id} is not usable.")
            return None
        self._proxy_urls[remote.id] = remote.proxy_url
        return RemoteSession(remote_pool=self, remote=remote)

    async def reset_store(self) -> None:
        """Nothing to reset: the service keeps the pool, shared with other crawlers."""
        logger.debug("RemoteSessionPool.reset_store: the shared pool is kept")

    async def proxy_url_for(self, session_id: str) -> str | None:
        """The sticky proxy URL of a session of this pool."""
        if session_id in self._proxy_urls:
            return self._proxy_urls[session_id]
        self._require_active()
        assert self._client is not None
        remote = await self._client.get_session(self._pool, session_id)
        self._proxy_urls[session_id] = remote.proxy_url
        return remote.proxy_url

    # -- reports -----------------------------------------------------------------------------------------

    def _report(self, session: RemoteSession, kind: str) -> asyncio.Task[None] | None:
        """Send one report of `session` now, after the ones of it still in flight; called from Crawlee's
        synchronous mark methods, so it never waits. Returns the task sending it (None when it was
        handed to the pool's loop from another thread)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with self._lock:
            loop = self._loop
            if self._closing or not self._active or self._client is None or loop is None or loop.is_closed():
                raise RuntimeError(f"The {type(self).__name__} is not active: the report of session {session.id} is lost.")
            # Only the first report carries the lease, which it ends: a later one with it could not tell,
            # after a lost answer, whether it arrived.
            lease = session._lease
            session._lease = None
            if lease is not None:
                self._unreported.pop(lease.id, None)
            # The request it served has its proxy: kept no longer (a later need reads the session).
            self._proxy_urls.pop(session.id, None)
            cookies = session._cookies_changed() or None
            user_data = session._user_data_patch()
            blocked = session._blocked_by if kind == "retire" else None
            session._blocked_by = None
            send = partial(self._send, session.id, kind, lease, cookies, user_data, blocked)
            if running is loop:
                return self._start(session.id, kind, send)
            # Queued on the loop before `_closing` can be set, so exit's last flush starts and awaits it.
            loop.call_soon_threadsafe(self._start, session.id, kind, send)
            return None

    def _start(self, session_id: str, kind: str, send: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        previous = self._chains.get(session_id)
        task = asyncio.get_running_loop().create_task(self._send_after(previous, send, session_id, kind))
        self._chains[session_id] = task
        self._pending.add(task)
        task.add_done_callback(partial(self._done, session_id=session_id))
        return task

    def _done(self, task: asyncio.Task[None], session_id: str) -> None:
        self._pending.discard(task)
        if self._chains.get(session_id) is task:
            del self._chains[session_id]

    async def _send(
        self, session_id: str, kind: str, lease: _models.Lease | None, cookies: list[dict[str, Any]] | None,
        user_data: dict[str, Any] | None, blocked: tuple[int, set[int]] | None,
    ) -> None:
        client = self._client
        if client is None:
            raise RuntimeError(f"The {type(self).__name__} is not active.")
        if user_data is not None:
            # Reports carry no user data: a changed `session.user_data` costs one PATCH, before the report;
            # when it fails, the report still goes.
            try:
                await client.patch_session(self._pool, session_id, user_data=user_data)
            except Exception as e:  # noqa: BLE001
                self._report_failed(session_id, "user_data", e)
        try:
            await self._send_report(client, session_id, kind, lease, cookies, blocked)
        except InvalidRequest:
            if not cookies:
                raise
            # The service refused the request, and it carried cookies (the one part of it a site decides):
            # the mark matters more than the cookies, so it goes again without them.
            logger.warning(f"{kind} of session {session_id}: the service refused it with its cookies; sending it without")
            await self._send_report(client, session_id, kind, lease, None, blocked)

    async def _send_report(
        self, client: AsyncSessionPoolClient, session_id: str, kind: str, lease: _models.Lease | None,
        cookies: list[dict[str, Any]] | None, blocked: tuple[int, set[int]] | None,
    ) -> None:
        if blocked is not None:
            code, ignored = blocked
            await client.report_status_code(
                self._pool, session_id, code, lease_id=lease, cookies=cookies,
                ignore_http_error_status_codes=sorted(ignored) or None,
            )
        elif kind == "mark_good":
            await client.mark_good(self._pool, session_id, lease_id=lease, cookies=cookies)
        elif kind == "mark_bad":
            await client.mark_bad(self._pool, session_id, lease_id=lease, cookies=cookies)
        else:
            await client.retire(self._pool, session_id, lease_id=lease, cookies=cookies)

    async def _send_after(
        self, previous: asyncio.Task[None] | None, send: Callable[[], Awaitable[None]], session_id: str, kind: str
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await send()
        except Exception as e:  # noqa: BLE001 - every failure is kept and logged, none ends the crawl
            self._report_failed(session_id, kind, e)

    def _report_failed(self, session_id: str, kind: str, error: BaseException) -> None:
        self.report_error_count += 1
        self.report_errors.append(ReportError(session_id, kind, error))
        del self.report_errors[:-_KEPT_ERRORS]
        logger.warning(f"{kind} of session {session_id} did not reach the service ({self.report_error_count} so far): {error}")

    async def _release_unreported(self) -> None:
        """End the leases of sessions acquired and never reported, so that other crawlers get them now
        rather than when the leases run out. A session the crawler found blocked (it checked a status
        code that blocks it, then gave up the request without retiring the session) is reported as
        blocked instead: the site refused it, for every crawler of the pool."""
        # Taken in one step: other threads' reports pop from it. Leases are not compared with the local
        # clock (the service's may differ): a release of one that ran out is a LeaseMismatch, ignored.
        with self._lock:
            unreported, self._unreported = self._unreported, {}
            for session in unreported.values():
                session._lease = None  # a report made meanwhile must not carry a lease this ends
        client = self._client
        if not unreported or client is None:
            return

        async def end(lease_id: str, session: RemoteSession) -> None:
            blocked = session._blocked_by
            try:
                if blocked is not None:
                    # Sent whether or not the lease is still live: a status code report with a lease that
                    # has ended still applies (it just ends nothing), and the site's verdict matters.
                    code, ignored = blocked
                    await client.report_status_code(
                        self._pool, session.id, code, lease_id=lease_id,
                        ignore_http_error_status_codes=sorted(ignored) or None,
                    )
                else:
                    await client.release(self._pool, session.id, lease_id)
            except LeaseMismatch:
                pass  # the lease has ended already (it ran out, or the session retired)
            except Exception as e:  # noqa: BLE001
                self._report_failed(session.id, "status_code" if blocked is not None else "release", e)

        logger.debug(f"releasing {len(unreported)} leases of sessions acquired and never reported")
        await asyncio.gather(*(end(lease_id, session) for lease_id, session in unreported.items()))

    async def flush(self) -> None:
        """Wait until every report sent so far has been answered (or has failed)."""
        await asyncio.sleep(0)  # reports handed over from other threads start first
        while self._pending:
            await asyncio.wait(list(self._pending))


class SessionProxyConfiguration(ProxyConfiguration):
    """A `ProxyConfiguration` that gives each request its session's sticky `proxy_url` from the service
    (no proxy for a session that has none)."""

    def __init__(self, session_pool: RemoteSessionPool) -> None:
        self._session_pool = session_pool
        super().__init__(new_url_function=cast(Any, self._url_for_session))

    async def _url_for_session(self, session_id: str | None, request: Request | None) -> str | None:
        if session_id is None:
            return None
        return await self._session_pool.proxy_url_for(session_id)
