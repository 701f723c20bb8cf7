"""Crawlee's PlaywrightCrawler with RemoteSessionPool: a real headless Chromium (Debian's, at
$CHROMIUM_BIN) crawls the local site. The cookies a session holds in the service go into the browser
before each page, the ones the site set in the browser come back to the service's jar, and the
session the site blocks is retired there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crawlee import ConcurrencySettings
from crawlee.crawlers import PlaywrightCrawler, PlaywrightCrawlingContext
from crawlee.storage_clients import MemoryStorageClient

from session_pool_client import SessionPoolClient
from session_pool_client.crawlee import RemoteSessionPool
from support import Server, Site

CHROMIUM = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))


@pytest.fixture
def site():
    s = Site(limit=3).start()
    yield s
    s.stop()


def playwright_crawler(pool: RemoteSessionPool, **kwargs) -> PlaywrightCrawler:
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/python-client.sh installs Debian's chromium")
    return PlaywrightCrawler(
        session_pool=pool, storage_client=MemoryStorageClient(), configure_logging=False,
        headless=True, browser_type="chromium",
        # Chromium's sandbox does not start as root (nor in most containers); the site is local.
        browser_launch_options={"executable_path": str(CHROMIUM), "chromium_sandbox": False},
        # A page of its own browser context: a shared context would mix the sessions' cookies.
        use_incognito_pages=True,
        concurrency_settings=ConcurrencySettings(max_concurrency=2, desired_concurrency=2),
        **kwargs,
    )


async def test_playwright_crawler_shares_the_pool(server: Server, site: Site, pool_name: str) -> None:
    pool = RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=2)
    crawler = playwright_crawler(pool)
    seen: list[tuple[str, str, str | None]] = []

    @crawler.router.default_handler
    async def handle(context: PlaywrightCrawlingContext) -> None:
        # The page shows the `sid` token the browser sent (or, on a first visit, the one the site set).
        seen.append((context.request.url, context.session.id, await context.page.text_content("#token")))

    pages = [f"{site.url}/page/{n}" for n in range(10)]
    await crawler.run(pages)

    # Every page fetched, once.
    assert sorted(url for url, _, _ in seen) == sorted(pages)
    assert pool.report_errors == []
    assert not [r for r in site.requests if r["status"] == 400]

    with SessionPoolClient(server.url) as client:
        sessions = {s.id: s for s in client.iter_sessions(pool_name)}
        status = client.get_pool(pool_name)

    # The sessions the crawler used are the service's, and the service counted their pages.
    used = {sid for _, sid, _ in seen}
    assert used <= set(sessions)
    for sid in used:
        assert sessions[sid].usage_count == len([1 for _, s, _ in seen if s == sid]), sessions[sid]

    # One token per session: the cookie the site set in the browser went to the service's jar, and came
    # back from it into the next page's (new) browser context, for every page of the session.
    tokens = {sid: {token for _, s, token in seen if s == sid} for sid in used}
    assert all(len(t) == 1 for t in tokens.values()), tokens
    assert len({next(iter(t)) for t in tokens.values()}) == len(used)
    for sid, (token,) in tokens.items():
        jar = {c.name: c for c in sessions[sid].cookies}
        assert jar["sid"].value == token and jar["sid"].http_only, jar
    assert set(site.tokens) <= {c.value for s in sessions.values() for c in s.cookies if c.name == "sid"}

    # 3 uses per token, then 403: 10 pages block at least 2 sessions, which the service retired; none
    # was used after its block.
    blocked = [t for t, info in site.tokens.items() if info["blocked"]]
    assert len(blocked) >= 2
    assert all(info["blocked"] <= 1 and info["after_block"] == 0 for info in site.tokens.values())
    retired = [s for s in sessions.values() if s.retired_reason == "blocked_status_code"]
    assert len(retired) == len(blocked)
    assert {c.value for s in retired for c in s.cookies if c.name == "sid"} == set(blocked)

    # No lease left.
    assert status.leased_session_count == 0
    assert all(s.lease is None and s.leased_until is None for s in sessions.values())


async def test_a_cookie_deleted_in_the_browser_leaves_the_service_jar(server: Server, site: Site, pool_name: str) -> None:
    cookie = {"domain": "127.0.0.1", "path": "/"}
    with SessionPoolClient(server.url) as client:
        client.put_pool(pool_name, {"max_pool_size": 1})
        client.create_session(pool_name, id="s1", cookies=[{"name": "gone", "value": "1", **cookie},
                                                           {"name": "kept", "value": "2", **cookie}])
    pool = RemoteSessionPool(url=server.url, pool=pool_name)
    crawler = playwright_crawler(pool)
    before: list[tuple[str, str]] = []

    @crawler.router.default_handler
    async def handle(context: PlaywrightCrawlingContext) -> None:
        before.append((context.session.id, await context.page.evaluate("document.cookie")))
        # The page's own script deletes a cookie, as a site's would.
        await context.page.evaluate("document.cookie = 'gone=; Max-Age=0; Path=/'")

    await crawler.run([f"{site.url}/page/0"])
    # The session's cookies in the service were in the browser; the one deleted there left the service's jar.
    assert [(sid, {"gone=1", "kept=2"} <= set(cookies.split("; "))) for sid, cookies in before] == [("s1", True)]
    assert pool.report_errors == []
    with SessionPoolClient(server.url) as client:
        after = client.get_session(pool_name, "s1")
        header = client.cookies_for_url(pool_name, "s1", f"{site.url}/page/1").cookie_header
    assert after.usage_count == 1
    assert sorted(header.split("; ")) == sorted(["kept=2", f"sid={next(iter(site.tokens))}"])
