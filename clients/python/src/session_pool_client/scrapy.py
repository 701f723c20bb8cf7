"""Scrapy (2.13+) on the shared pool: `SessionPoolMiddleware`, an asynchronous downloader middleware.

    # settings.py
    TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"   # Scrapy's default
    DOWNLOADER_MIDDLEWARES = {"session_pool_client.scrapy.SessionPoolMiddleware": 650}
    SESSION_POOL_URL = "http://127.0.0.1:8080"    # else the SESSION_POOL_URL environment variable
    SESSION_POOL_API_KEY = None                   # else SESSION_POOL_API_KEY
    SESSION_POOL_POOL = "shop"                    # default "default"
    SESSION_POOL_LEASE_SECS = 60
    SESSION_POOL_ENABLED = True
    SESSION_POOL_ACQUIRE_TIMEOUT = 120            # seconds a request waits for a free session
    SESSION_POOL_RETRY_TIMEOUT = 60               # seconds a call is retried while the service is away

Each request (unless `meta["session_pool"] = False`) gets a session leased from the pool: its `Cookie`
header comes from the session's jar for the request URL and its proxy (`meta["proxy"]`) from the
session's `proxy_url`; `meta["session_id"]` names the session. The response's status code and its
`Set-Cookie` headers are reported in one call (with `mark`, ending the lease); a download error marks the
session bad; a status that blocks the session retires it, and the request is retried with another
session within Scrapy's retry settings (`RETRY_ENABLED`, `RETRY_TIMES`, `meta["max_retry_times"]`).

At priority 650 it sees a response before RetryMiddleware (550) and RedirectMiddleware (600). Scrapy's
CookiesMiddleware (700) may stay enabled: `meta["dont_merge_cookies"]` is set on the requests this
middleware handles, so it neither replaces the session's Cookie header nor keeps a jar of its own for them.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest, NotConfigured

from ._client import AsyncSessionPoolClient, check_base_url, check_lease_secs, check_pool
from ._errors import SessionNotFound, SessionPoolError

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["SessionPoolMiddleware"]

logger = logging.getLogger(__name__)

_LEASE = "_session_pool_lease"
_PROXY = "_session_pool_proxy"


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
        self._client: AsyncSessionPoolClient | None = None
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SessionPoolMiddleware:
        middleware = cls(crawler)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
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
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"session_pool/{key}")

    async def process_request(self, request: Request, spider: Spider) -> None:
        if request.meta.get("session_pool") is False:
            return None
        # Always a new session: a retried request arrives here again with the old one in its meta.
        session = await self.client.acquire(
            self.pool, lease_secs=self.lease_secs, url=request.url, wait_secs=self.acquire_timeout,
            retry_lost_answers=True,
        )
        self._inc("acquired")
        request.meta["session_id"] = session.id
        request.meta[_LEASE] = session.lease  # the Lease object: a report whose answer is lost can be checked
        request.meta["dont_merge_cookies"] = True
        if session.cookie_header:
            request.headers["Cookie"] = session.cookie_header
        else:
            request.headers.pop("Cookie", None)
        if session.proxy_url:
            request.meta["proxy"] = session.proxy_url
            request.meta[_PROXY] = session.proxy_url
        elif request.meta.pop(_PROXY, None) is not None:
            request.meta.pop("proxy", None)
        return None

    async def process_response(self, request: Request, response: Response, spider: Spider) -> Request | Response:
        if _LEASE not in request.meta:
            return response
        lease_id = request.meta.pop(_LEASE)
        session_id = request.meta["session_id"]
        set_cookie = [h.decode("latin-1") for h in response.headers.getlist("Set-Cookie")]
        try:
            result = await self.client.report_status_code(
                self.pool, session_id, response.status, mark=True, lease_id=lease_id,
                url=response.url, set_cookie=set_cookie,
            )
        except SessionNotFound:
            return response
        except SessionPoolError as e:
            self._inc("report_failed")
            logger.warning(f"the report of session {session_id} did not reach the service: {e}")
            return response
        if not result.blocked:
            return response
        self._inc(f"blocked/{response.status}")
        retry = get_retry_request(
            request, spider=spider, reason=f"session blocked ({response.status})",
        )
        if retry is None:
            return response
        retry.headers.pop("Cookie", None)
        return retry

    async def process_exception(self, request: Request, exception: Exception, spider: Spider) -> None:
        lease_id = request.meta.pop(_LEASE, None)
        if lease_id is None:
            return None
        session_id = request.meta["session_id"]
        try:
            if isinstance(exception, IgnoreRequest):  # dropped, not a failure of the session
                await self.client.release(self.pool, session_id, lease_id.id)
                return None
            await self.client.mark_bad(self.pool, session_id, lease_id=lease_id)
            self._inc("marked_bad")
        except SessionPoolError as e:
            logger.warning(f"mark_bad of session {session_id} did not reach the service: {e}")
        return None
