"""Crawlee's own crawlers (ParselCrawler, BeautifulSoupCrawler, HttpCrawler) with RemoteSessionPool, in
this process: the site's cookies come back from the service, requests pinned to a session use it."""

from __future__ import annotations

import pytest
from crawlee import ConcurrencySettings, Request
from crawlee.crawlers import BeautifulSoupCrawler, HttpCrawler, ParselCrawler
from crawlee.storage_clients import MemoryStorageClient

from session_pool_client import SessionPoolClient
from session_pool_client.crawlee import RemoteSessionPool
from support import Server, Site


@pytest.fixture
def site():
    s = Site(limit=3).start()
    yield s
    s.stop()


@pytest.mark.parametrize("crawler_class", [ParselCrawler, BeautifulSoupCrawler, HttpCrawler])
async def test_crawlers_built_on_basic_crawler_share_the_pool(server: Server, site: Site, pool_name: str,
                                                              crawler_class) -> None:
    seen: list[tuple[str, str]] = []
    pool = RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=2)
    crawler = crawler_class(
        session_pool=pool, storage_client=MemoryStorageClient(), configure_logging=False,
        concurrency_settings=ConcurrencySettings(max_concurrency=2, desired_concurrency=2),
    )

    @crawler.router.default_handler
    async def handle(context) -> None:
        seen.append((context.request.url, context.session.id))

    await crawler.run([f"{site.url}/page/{n}" for n in range(12)])
    assert len(seen) == 12
    assert pool.report_errors == []  # the cookie `seen_?` the service refuses did not cost a report
    # 3 uses per cookie then 403: 12 pages use at least 4 sessions; all but the last 2 (the pool) are blocked.
    blocked = [t for t, info in site.tokens.items() if info["blocked"]]
    assert all(info["blocked"] <= 1 and info["after_block"] == 0 for info in site.tokens.values())
    with SessionPoolClient(server.url) as client:
        sessions = {s.id: s for s in client.iter_sessions(pool_name)}
    assert len([s for s in sessions.values() if s.retired_reason == "blocked_status_code"]) == len(blocked) >= 2
    jar_tokens = {c.value for s in sessions.values() for c in s.cookies if c.name == "sid"}
    assert set(site.tokens) <= jar_tokens
    assert not [r for r in site.requests if r["status"] == 400]


async def test_a_request_pinned_to_a_session_uses_it(server: Server, site: Site, pool_name: str) -> None:
    with SessionPoolClient(server.url) as client:
        client.put_pool(pool_name, {"max_pool_size": 5})
        pinned = client.create_session(pool_name, id="user_1")
        client.patch_session(pool_name, "user_1", user_data={"who": "pinned"})
    seen: dict[str, str] = {}
    crawler = HttpCrawler(session_pool=RemoteSessionPool(url=server.url, pool=pool_name),
                          storage_client=MemoryStorageClient(), configure_logging=False)

    @crawler.router.default_handler
    async def handle(context) -> None:
        seen[context.request.url] = context.session.id

    await crawler.run([Request.from_url(f"{site.url}/page/{n}", session_id=pinned.id) for n in range(2)])
    assert set(seen.values()) == {"user_1"}
    with SessionPoolClient(server.url) as client:
        after = client.get_session(pool_name, "user_1")
    assert after.usage_count == 2 and any(c.name == "sid" for c in after.cookies)
