"""Scrapy (2.13+) on the shared pool: `SessionPoolMiddleware`, an asynchronous downloader middleware.

    # settings.py
    TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"   # Scrapy's default
    DOWNLOADER_MIDDLEWARES = {"session_pool_client.scrapy.SessionPoolMiddleware": 650}
    SESSION_POOL_URL = "http://127.0.0.1:8080"    # else the SESSION_POOL_URL environment variable
    SESSION_POOL_API_KEY = None                   # else SESSION_POOL_API_KEY
    SESSION_POOL_POOL = "shop"                    # default "default"
    SESSION_POOL_LEASE_SECS = 60                  # keep it >= DOWNLOAD_TIMEOUT (a warning says when not)
    SESSION_POOL_ENABLED = True
    SESSION_POOL_ACQUIRE_TIMEOUT = 120            # seconds a request waits for a free session
    SESSION_POOL_RETRY_TIMEOUT = 60               # seconds a call is retried while the service is away

Each http(s) request (unless `meta["session_pool"] = False`) gets a session leased from the pool: its `Cookie`
header comes from the session's jar for the request URL and its proxy (`meta["proxy"]`) from the
session's `proxy_url`; `meta["session_id"]` names the session. The response's status code and its
`Set-Cookie` headers are reported in one call (with `mark`, ending the lease); a download error marks the
session bad; a status that blocks the session retires it, and the request is retried with another
session within Scrapy's retry settings (`RETRY_ENABLED`, `RETRY_TIMES`, `meta["max_retry_times"]`,
`meta["dont_retry"]`; not retried, the blocked response goes to the spider).

A redirect that Scrapy's RedirectMiddleware follows is part of the same page visit: the redirect's
cookies are stored in the session, and the redirected request keeps the session and its lease, with the
session's Cookie header for the new URL; the final response is the one reported. A lease still held when
the spider closes (a request dropped by the scheduler, say) is released then.

At priority 650 it sees a response before RetryMiddleware (550) and RedirectMiddleware (600). Scrapy's
CookiesMiddleware (700) may stay enabled: `meta["dont_merge_cookies"]` is set on the requests this
middleware handles, so it neither replaces the session's Cookie header nor keeps a jar of its own for them.

A call to the service that fails during a report is logged at warning with the session's id and counted
in the stats as `session_pool/report_failed`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from scrapy import signals
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object
from w3lib.url import safe_url_string

from ._client import AsyncSessionPoolClient, check_base_url, check_lease_secs, check_pool
from ._errors import LeaseMismatch, SessionPoolError

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

    from ._models import Lease

__all__ = ["SessionPoolMiddleware"]

logger = logging.getLogger(__name__)

_LEASE = "_session_pool_lease"
_PROXY = "_session_pool_proxy"
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _redirects_followed(settings: BaseSettings) -> bool:
    """Whether Scrapy's RedirectMiddleware (or a subclass) is enabled."""
    if not settings.getbool("REDIRECT_ENABLED", True):
        return False
    for component in build_component_list(settings.getwithbase("DOWNLOADER_MIDDLEWARES")):
        try:
            cls = load_object(component) if isinstance(component, str) else component
        except (ImportError, ValueError, NameError):
            continue
        if isinstance(cls, type) and issubclass(cls, RedirectMiddleware):
            return True
    return False


class SessionPoolMiddleware:
    """Leases a session of the shared pool for each request, and reports each response to it."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        if not settings.getbool("SESSION_POOL_ENABLED", True):
            raise NotConfigured("SESSION_POOL_ENABLED is false")
        self.crawler = crawler
        self.url = check_base_url(settings.get("SESSION_POOL_URL") or os.environ.get("SESSION_POOL_URL"))
        self.api_key = settings.get("SESSION_POOL_API_KEY") or os.environ.get("SESSION_POOL_API_KEY") or None
        self.pool = check_pool(settings.get("SESSION_POOL_POOL", "default"))
        self.lease_secs = check_lease_secs(settings.getfloat("SESSION_POOL_LEASE_SECS", 60.0))
        self.acquire_timeout = settings.getfloat("SESSION_POOL_ACQUIRE_TIMEOUT", 120.0)
        self.retry_timeout = settings.getfloat("SESSION_POOL_RETRY_TIMEOUT", 60.0)
        self.retry_enabled = settings.getbool("RETRY_ENABLED", True)
        self.follows_redirects = _redirects_followed(settings)
        self.max_redirect_times = settings.getint("REDIRECT_MAX_TIMES", 20)
        download_timeout = settings.getfloat("DOWNLOAD_TIMEOUT", 180.0)
        if self.lease_secs is not None and self.lease_secs < download_timeout:
            logger.warning(
                f"SESSION_POOL_LEASE_SECS ({self.lease_secs:g}) is shorter than DOWNLOAD_TIMEOUT "
                f"({download_timeout:g}): a download that takes longer outlives its lease, and the pool may hand "
                f"its session to another request meanwhile. Set SESSION_POOL_LEASE_SECS >= DOWNLOAD_TIMEOUT."
            )
        self._client: AsyncSessionPoolClient | None = None
        # Leases taken and not yet ended by a report or a release: lease id -> (session id, lease).
        self._leases: dict[str, tuple[str, Lease]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        # Set by spider_closed: a late hook then calls nothing (its client would never be closed).
        self._closed = False
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SessionPoolMiddleware:
        middleware = cls(crawler)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(middleware.request_dropped, signal=signals.request_dropped)
        return middleware

    @property
    def client(self) -> AsyncSessionPoolClient:
        # Made on first use, inside the running asyncio loop of the reactor.
        if self._client is None:
            self._client = AsyncSessionPoolClient(
                self.url, api_key=self.api_key, retry_timeout=self.retry_timeout
            )
        return self._client

    async def spider_closed(self, spider: Spider) -> None:
        self._closed = True
        if self._releasing:
            await asyncio.wait(list(self._releasing))
        held, self._leases = self._leases, {}
        if held and self._client is not None:
            logger.info(f"releasing {len(held)} session leases still held at the spider's close")
            await asyncio.gather(*(self._release(session_id, lease) for session_id, lease in held.values()))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def request_dropped(self, request: Request, spider: Spider) -> None:
        """A request the scheduler dropped (its dupefilter) never reaches the downloader again: a lease it
        carries (a redirect's) is released now."""
        lease: Lease | None = request.meta.pop(_LEASE, None)
        if lease is None or self._leases.pop(lease.id, None) is None or self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._release(request.meta["session_id"], lease))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"session_pool/{key}")

    def _report_failed(self, session_id: str, what: str, error: Exception) -> None:
        self._inc("report_failed")
        logger.warning(f"{what} of session {session_id} did not reach the service: {error}")

    async def _release(self, session_id: str, lease: Lease) -> None:
        try:
            await self.client.release(self.pool, session_id, lease.id)
            self._inc("released")
        except LeaseMismatch:
            pass  # it has ended already: run out, or the session retired
        except SessionPoolError as e:
            self._report_failed(session_id, "release", e)

    async def process_request(self, request: Request, spider: Spider) -> None:
        if request.meta.get("session_pool") is False or self._closed:
            return None
        if urlsplit(request.url).scheme.lower() not in ("http", "https"):
            return None  # file:, data:, ftp:, s3:, ...: no cookies or proxy of a web session apply
        lease: Lease | None = request.meta.get(_LEASE)
        if lease is not None and lease.id in self._leases:
            # A redirect this middleware let through: the same visit, with the same session and lease.
            await self._continue_visit(request)
            return None
        request.meta.pop(_LEASE, None)
        # A new session: a retried request arrives here again with the old one in its meta.
        session = await self.client.acquire(
            self.pool, lease_secs=self.lease_secs, url=request.url, wait_secs=self.acquire_timeout,
            retry_lost_answers=True,
        )
        self._inc("acquired")
        request.meta["session_id"] = session.id
        if session.lease is not None:
            request.meta[_LEASE] = session.lease  # the Lease object: a report whose answer is lost can be checked
            self._leases[session.lease.id] = (session.id, session.lease)
        request.meta["dont_merge_cookies"] = True
        self._set_cookie_header(request, session.cookie_header)
        if session.proxy_url:
            request.meta["proxy"] = session.proxy_url
            request.meta[_PROXY] = session.proxy_url
        elif request.meta.pop(_PROXY, None) is not None:
            request.meta.pop("proxy", None)
        return None

    async def _continue_visit(self, request: Request) -> None:
        session_id = request.meta["session_id"]
        try:
            cookies = (await self.client.cookies_for_url(self.pool, session_id, request.url)).cookie_header
        except SessionPoolError as e:
            # The Cookie header RedirectMiddleware kept (the previous page's, when it allows) stays.
            self._report_failed(session_id, "cookies_for_url", e)
        else:
            self._set_cookie_header(request, cookies)
        if request.meta.get(_PROXY):
            request.meta["proxy"] = request.meta[_PROXY]
        self._inc("redirects_followed")

    @staticmethod
    def _set_cookie_header(request: Request, cookie_header: str | None) -> None:
        if cookie_header:
            request.headers["Cookie"] = cookie_header
        else:
            request.headers.pop("Cookie", None)

    def _will_redirect(self, request: Request, response: Response, spider: Spider) -> bool:
        """Whether Scrapy's RedirectMiddleware follows this response (its own conditions)."""
        if not self.follows_redirects or response.status not in _REDIRECT_STATUSES or "Location" not in response.headers:
            return False
        meta = request.meta
        if (
            meta.get("dont_redirect", False)
            or meta.get("handle_httpstatus_all", False)
            or response.status in getattr(spider, "handle_httpstatus_list", [])
            or response.status in meta.get("handle_httpstatus_list", [])
        ):
            return False
        location = safe_url_string(response.headers["Location"] or b"")
        if urlsplit(urljoin(request.url, location)).scheme not in ("http", "https"):
            return False
        ttl = meta.get("redirect_ttl", self.max_redirect_times)
        return bool(ttl) and meta.get("redirect_times", 0) + 1 <= self.max_redirect_times

    async def process_response(self, request: Request, response: Response, spider: Spider) -> Request | Response:
        lease: Lease | None = request.meta.get(_LEASE)
        if lease is None or self._closed:
            return response
        session_id = request.meta["session_id"]
        set_cookie = [h.decode("latin-1") for h in response.headers.getlist("Set-Cookie")]
        if lease.id in self._leases and self._will_redirect(request, response, spider):
            # The visit goes on at the new URL with this session: keep the redirect's cookies, report later.
            if set_cookie:
                try:
                    await self.client.store_cookies(self.pool, session_id, response.url, set_cookie)
                except SessionPoolError as e:
                    self._report_failed(session_id, "store_cookies", e)
            return response
        request.meta.pop(_LEASE)
        self._leases.pop(lease.id, None)
        try:
            result = await self.client.report_status_code(
                self.pool, session_id, response.status, mark=True, lease_id=lease,
                url=response.url, set_cookie=set_cookie,
            )
        except SessionPoolError as e:
            self._report_failed(session_id, "status_code", e)
            return response
        if not result.blocked:
            return response
        self._inc(f"blocked/{response.status}")
        if not self.retry_enabled or request.meta.get("dont_retry", False):
            return response  # the session is retired; the spider gets the blocked response
        retry = get_retry_request(
            request, spider=spider, reason=f"session blocked ({response.status})",
        )
        if retry is None:
            return response
        retry.headers.pop("Cookie", None)
        return retry

    async def process_exception(self, request: Request, exception: Exception, spider: Spider) -> None:
        lease: Lease | None = request.meta.pop(_LEASE, None)
        if lease is None or self._closed:
            return None
        self._leases.pop(lease.id, None)
        session_id = request.meta["session_id"]
        if isinstance(exception, IgnoreRequest):  # dropped, not a failure of the session
            await self._release(session_id, lease)
            return None
        try:
            await self.client.mark_bad(self.pool, session_id, lease_id=lease)
            self._inc("marked_bad")
        except SessionPoolError as e:
            self._report_failed(session_id, "mark_bad", e)
        return None

