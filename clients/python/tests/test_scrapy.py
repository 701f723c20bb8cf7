"""SessionPoolMiddleware: its settings, and its behaviour in a real Scrapy crawl (in a process of its own)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

from types import SimpleNamespace

import pytest
from scrapy import Request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse
from scrapy.settings import Settings
from scrapy.signalmanager import SignalManager

from session_pool_client import InvalidArgument, SessionPoolClient
from session_pool_client.scrapy import SessionPoolMiddleware
from support import Server, Site

HERE = Path(__file__).parent


def middleware(monkeypatch: pytest.MonkeyPatch, **settings) -> SessionPoolMiddleware:
    monkeypatch.delenv("SESSION_POOL_URL", raising=False)
    monkeypatch.delenv("SESSION_POOL_API_KEY", raising=False)
    return SessionPoolMiddleware.from_crawler(crawler(**settings))


def crawler(**settings):
    """What the middleware reads of a Crawler: its settings, stats and signals (a real Crawler would need
    an installed reactor; the crawl below runs the middleware in a real one)."""
    return SimpleNamespace(settings=Settings(settings), stats=None, signals=SignalManager())


def test_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    mw = middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_POOL="shop",
                    SESSION_POOL_LEASE_SECS=15, SESSION_POOL_API_KEY="k")
    assert (mw.url, mw.pool, mw.lease_secs, mw.api_key) == ("http://127.0.0.1:9", "shop", 15, "k")
    with pytest.raises(NotConfigured):
        middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_ENABLED=False)
    with pytest.raises(InvalidArgument, match="'my shop'"):
        middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_POOL="my shop")
    with pytest.raises(InvalidArgument, match="SESSION_POOL_URL"):
        middleware(monkeypatch)
    with pytest.raises(InvalidArgument, match="lease_secs"):
        middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_LEASE_SECS=0)
    monkeypatch.setenv("SESSION_POOL_URL", "http://127.0.0.1:7")
    monkeypatch.setenv("SESSION_POOL_API_KEY", "from-env")
    mw = SessionPoolMiddleware.from_crawler(crawler())
    assert (mw.url, mw.api_key, mw.pool, mw.lease_secs) == ("http://127.0.0.1:7", "from-env", "default", 60)


def sid_of(cookie_header: str) -> str | None:
    cookies = SimpleCookie(cookie_header)
    return cookies["sid"].value if "sid" in cookies else None


def test_a_crawl(server: Server, pool_name: str) -> None:
    site = Site(limit=2).start()
    try:
        with SessionPoolClient(server.url) as client:
            client.put_pool(pool_name, {"max_pool_size": 2})
        proc = subprocess.run([sys.executable, str(HERE / "crawlers" / "scrapy_checks.py"), server.url, site.url,
                               pool_name], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = result["stats"]
        pages = result["pages"]
        free = [p for p in pages if p.get("free")]
        assert len(free) == 1 and free[0]["session_id"] is None  # meta["session_pool"] = False: left alone
        pooled = [p for p in pages if not p.get("free")]
        assert len(pooled) == 8 + 3 and all(p["status"] == 200 for p in pooled)
        # Scrapy's CookiesMiddleware stayed enabled and kept no cookie of the pool's requests; the one
        # cookie it holds is from the request outside the pool.
        assert result["cookie_middleware_cookies"] == [2]
        with SessionPoolClient(server.url) as client:
            sessions = {s.id: s for s in client.iter_sessions(pool_name)}
            assert client.get_pool(pool_name).leased_session_count == 0, "a lease outlived its request"
        holder = {c.value: s.id for s in sessions.values() for c in s.cookies if c.name == "sid"}
        issued = {r["new_token"] for r in site.requests if "new_token" in r and r["path"] != "/page/free"}
        assert set(holder) == issued  # every token the site issued to the pool is in one session's jar

        # Every Cookie header sent was the serving session's own: the token it carried is in that
        # session's jar, and a request without one got its new token stored in that session.
        for p in pooled:
            token = sid_of(p["cookie"])
            if token is not None:
                assert holder[token] == p["session_id"], p
        by_page: dict[str, list[dict]] = {}
        for r in site.requests:
            by_page.setdefault(r["path"], []).append(r)
        for p in pooled:
            if p["redirect_urls"]:
                continue
            final = by_page[urlsplit(p["url"]).path][-1]
            assert final["status"] == 200 and holder[final["token"] or final["new_token"]] == p["session_id"], p

        # 2 uses per cookie then 403: blocked requests were retried, each with a session other than the
        # one that was blocked; the blocked ones retired for the whole pool.
        retried = [p for p in pooled if p["retries"]]
        assert retried and stats.get("session_pool/blocked/403", 0) == sum(p["retries"] for p in retried)
        assert stats["retry/reason_count/session blocked (403)"] == sum(p["retries"] for p in retried)
        for p in retried:
            attempts = by_page[urlsplit(p["url"]).path]
            blocked = [holder[r["token"]] for r in attempts if r["status"] == 403]
            assert len(blocked) == p["retries"] and p["session_id"] not in blocked, (p, attempts)
            assert all(sessions[b].retired_reason == "blocked_status_code" for b in blocked)
        for info in site.tokens.values():
            assert info["after_block"] == 0 and info["blocked"] <= 1
        blocked_ids = {s.id for s in sessions.values() if s.retired_reason == "blocked_status_code"}
        assert len(blocked_ids) == stats["session_pool/blocked/403"]
        assert not [r for r in site.requests if r["status"] == 400]

        # A redirect is the same visit: the session that got the 302's cookie served the landing page,
        # with that cookie, under the same lease (one acquire per visit, one report).
        redirected = [p for p in pooled if p["redirect_urls"]]
        assert len(redirected) == 3
        for p in redirected:
            n = p["url"].rsplit("/", 1)[1]
            [hop] = [r["hop_set"] for r in by_page[f"/redirect/{n}"]]
            [landing] = by_page[f"/landing/{n}"]
            assert landing["hop"] == hop and f"hop_{n}={hop}" in p["cookie"]
            assert any(c.name == f"hop_{n}" and c.value == hop for c in sessions[p["session_id"]].cookies)
            assert landing["token"] == by_page[f"/redirect/{n}"][0]["token"]  # the same session's sid, if any
        assert stats["session_pool/acquired"] == len(pooled) + sum(p["retries"] for p in pooled)
        assert stats["session_pool/redirects_followed"] == 3
        assert sum(s.usage_count for s in sessions.values()) == len(pooled)  # a redirect hop is not a use
        assert "session_pool/report_failed" not in stats
    finally:
        site.stop()


# The middleware's decisions, called directly as Scrapy calls them, against the real service.


class Stats:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc_value(self, key: str, count: int = 1, start: int = 0) -> None:
        self.values[key] = self.values.get(key, start) + count


def live(server: Server, pool: str, **settings):
    """A middleware on the real service, and the spider Scrapy would pass it."""
    settings = {"SESSION_POOL_URL": server.url, "SESSION_POOL_POOL": pool, "SESSION_POOL_LEASE_SECS": 30,
                "DOWNLOAD_TIMEOUT": 30, **settings}
    crawler = SimpleNamespace(settings=Settings(settings), stats=Stats(), signals=SignalManager())
    return SessionPoolMiddleware.from_crawler(crawler), SimpleNamespace(crawler=crawler, name="checks")


@pytest.mark.parametrize("setting", [None, "RETRY_ENABLED", "dont_retry"])
async def test_a_blocked_response_is_retried_only_as_scrapy_allows(server: Server, pool_name: str,
                                                                  setting: str | None) -> None:
    mw, spider = live(server, pool_name, **({"RETRY_ENABLED": False} if setting == "RETRY_ENABLED" else {}))
    request = Request("http://shop.test/p/1", meta={"dont_retry": True} if setting == "dont_retry" else {})
    assert await mw.process_request(request, spider) is None
    session_id = request.meta["session_id"]
    response = HtmlResponse(request.url, status=403, body=b"blocked", request=request)
    out = await mw.process_response(request, response, spider)
    if setting is None:
        assert isinstance(out, Request) and out.meta["retry_times"] == 1 and "Cookie" not in out.headers
    else:
        assert out is response  # to the spider, as Scrapy's own RetryMiddleware would leave it
        assert "retry/count" not in spider.crawler.stats.values
    with SessionPoolClient(server.url) as client:
        session = client.get_session(pool_name, session_id)
    assert session.retired_reason == "blocked_status_code" and session.leased_until is None  # retired either way
    assert spider.crawler.stats.values["session_pool/blocked/403"] == 1
    await mw.spider_closed(spider)


async def test_a_download_error_marks_the_session_bad_and_a_dropped_request_releases_it(
    server: Server, pool_name: str
) -> None:
    mw, spider = live(server, pool_name)
    failed, dropped = Request("http://shop.test/p/1"), Request("http://shop.test/p/2")
    await mw.process_request(failed, spider)
    await mw.process_request(dropped, spider)
    assert await mw.process_exception(failed, TimeoutError("the download timed out"), spider) is None
    assert await mw.process_exception(dropped, IgnoreRequest("offsite"), spider) is None
    with SessionPoolClient(server.url) as client:
        bad = client.get_session(pool_name, failed.meta["session_id"])
        released = client.get_session(pool_name, dropped.meta["session_id"])
    assert (bad.error_score, bad.usage_count, bad.leased_until) == (1, 1, None)
    assert (released.error_score, released.usage_count, released.leased_until) == (0, 0, None)
    assert spider.crawler.stats.values == {"session_pool/acquired": 2, "session_pool/marked_bad": 1,
                                           "session_pool/released": 1}
    await mw.spider_closed(spider)


async def test_leases_still_held_when_the_spider_closes_are_released(server: Server, pool_name: str) -> None:
    mw, spider = live(server, pool_name)
    await mw.process_request(Request("http://shop.test/p/1"), spider)
    with SessionPoolClient(server.url) as client:
        assert client.get_pool(pool_name).leased_session_count == 1
        await mw.spider_closed(spider)
        assert client.get_pool(pool_name).leased_session_count == 0


async def test_a_failed_report_is_logged_with_its_session_and_counted(server: Server, pool_name: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    mw, spider = live(server, pool_name)
    request = Request("http://shop.test/p/1")
    await mw.process_request(request, spider)
    with SessionPoolClient(server.url) as client:
        client.delete_session(pool_name, request.meta["session_id"])
    response = HtmlResponse(request.url, status=200, body=b"ok", request=request)
    with caplog.at_level(logging.WARNING, logger="session_pool_client.scrapy"):
        assert await mw.process_response(request, response, spider) is response
    assert spider.crawler.stats.values["session_pool/report_failed"] == 1
    assert request.meta["session_id"] in caplog.text
    await mw.spider_closed(spider)


def test_a_lease_shorter_than_the_download_timeout_warns_once(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="session_pool_client.scrapy"):
        middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_LEASE_SECS=60, DOWNLOAD_TIMEOUT=60)
        assert caplog.records == []
        middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9", SESSION_POOL_LEASE_SECS=15, DOWNLOAD_TIMEOUT=30)
    [record] = caplog.records
    assert "SESSION_POOL_LEASE_SECS (15)" in record.message and "DOWNLOAD_TIMEOUT (30)" in record.message


async def test_requests_that_are_not_http_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    mw = middleware(monkeypatch, SESSION_POOL_URL="http://127.0.0.1:9")
    spider = SimpleNamespace(name="checks")
    for url in ("file:///etc/hosts", "data:,hello", "ftp://files.test/a.txt", "s3://bucket/key"):
        request = Request(url)
        assert await mw.process_request(request, spider) is None
        assert "session_id" not in request.meta and "Cookie" not in request.headers, url
    assert mw._client is None  # no call was made


async def test_a_redirect_whose_cookies_cannot_be_read_keeps_the_cookie_header(server: Server, pool_name: str) -> None:
    mw, spider = live(server, pool_name)
    request = Request("http://shop.test/p/1")
    await mw.process_request(request, spider)
    # As RedirectMiddleware makes it: the same meta (session and lease), the Cookie header it kept.
    redirected = request.replace(url="http://shop.test/landing", headers={"Cookie": "sid=kept"})
    with SessionPoolClient(server.url) as client:
        client.delete_session(pool_name, request.meta["session_id"])  # cookies_for_url now fails
    assert await mw.process_request(redirected, spider) is None
    assert redirected.headers["Cookie"] == b"sid=kept"
    assert spider.crawler.stats.values["session_pool/report_failed"] == 1
    await mw.spider_closed(spider)


async def test_hooks_after_the_spider_closed_call_nothing(server: Server, pool_name: str) -> None:
    mw, spider = live(server, pool_name)
    answered, failed = Request("http://shop.test/p/1"), Request("http://shop.test/p/2")
    await mw.process_request(answered, spider)
    await mw.process_request(failed, spider)
    await mw.spider_closed(spider)  # releases both leases, closes the client
    response = HtmlResponse(answered.url, status=200, body=b"late", request=answered)
    assert await mw.process_response(answered, response, spider) is response
    assert await mw.process_exception(failed, TimeoutError("late"), spider) is None
    mw.request_dropped(Request("http://shop.test/p/3"), spider)
    assert mw._client is None, "a late hook made a client that nobody closes"
    with SessionPoolClient(server.url) as client:
        assert client.get_session(pool_name, answered.meta["session_id"]).usage_count == 0
