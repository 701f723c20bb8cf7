"""Real crawlers, several processes at once, through one pool of the real service, against a site that
blocks a session's cookie after LIMIT uses and two forwarding proxies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from session_pool_client import SessionPoolClient
from support import Proxy, Server, Site, metric_sum

HERE = Path(__file__).parent
PAGES = 300
LIMIT = 5
POOL_SIZE = 8
SCRIPTS = {"crawlee": HERE / "crawlers" / "crawlee_crawl.py", "scrapy": HERE / "crawlers" / "scrapy_crawl.py"}


@pytest.fixture(scope="module")
def proxies():
    pair = [Proxy("proxy-a").start(), Proxy("proxy-b").start()]
    yield pair
    for p in pair:
        p.stop()


def start_crawlers(kinds: list[str], service: str, site: Site, pool: str, out_dir: Path, pages: int,
                   concurrency: int = 3) -> list[tuple[str, subprocess.Popen, Path]]:
    procs = []
    for i, kind in enumerate(kinds):
        name = f"{kind}-{i}"
        out = out_dir / f"{name}.jsonl"
        log = open(out_dir / f"{name}.log", "w")  # noqa: SIM115
        cmd = [sys.executable, str(SCRIPTS[kind]), "--service", service, "--pool", pool, "--site", site.url,
               "--pages", f"{i}:{pages}:{len(kinds)}", "--name", name, "--out", str(out), "--proxies",
               "--concurrency", str(concurrency)]
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), out))
    return procs


def wait_crawlers(procs, out_dir: Path, timeout: float = 150) -> list[dict]:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    for name, proc, out in procs:
        try:
            code = proc.wait(max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "timeout"
        log = (out_dir / f"{name}.log").read_text()
        assert code == 0, f"crawler {name} exited {code}:\n{log[-3000:]}"
        rows += [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rows


def check_crawl(client: SessionPoolClient, server: Server, site: Site, pool: str, rows: list[dict], pages: int,
                proxies: list[Proxy], cross_process: bool) -> dict:
    urls = {f"{site.url}/page/{n}" for n in range(pages)}
    # Every page is fetched, and handed to the crawler once.
    assert {r["url"] for r in rows} == urls, f"pages missing: {sorted(urls - {r['url'] for r in rows})[:5]}"
    assert len(rows) == pages, [u for u, n in Counter(r["url"] for r in rows).items() if n > 1][:5]
    assert all(r["status"] == 200 for r in rows)
    assert set(site.ok_pages) == {f"/page/{n}" for n in range(pages)}
    assert not [r for r in site.requests if r["status"] == 400], "a crawler sent a token the site never issued"

    # Which session holds which token: the site's cookie went back into the service's jar.
    sessions = list(client.iter_sessions(pool))
    by_token: dict[str, object] = {}
    for s in sessions:
        for c in s.cookies:
            if c.name == "sid":
                assert c.value not in by_token, f"token {c.value} in two sessions"
                by_token[c.value] = s
    assert set(site.tokens) <= set(by_token), "a cookie the site set never reached the service's jar"

    proxy_names = {p.url.rstrip("/"): p.name for p in proxies}
    blocked = 0
    for token, info in site.tokens.items():
        session = by_token[token]
        # No session is used after the service retired it, and a blocked session is blocked once.
        assert info["after_block"] == 0, f"session {session.id} was used after its 403"
        assert info["blocked"] in (0, 1)
        if info["blocked"]:
            blocked += 1
            assert session.retired and session.retired_reason == "blocked_status_code", session
        # Every request of a session went through that session's own proxy.
        assert info["proxies"] == {proxy_names[session.proxy_url.rstrip("/")]}, (session.id, info["proxies"])
    metrics = server.metrics()
    retired_blocked = metric_sum(metrics, "session_pool_retirements_total", pool=pool, reason="blocked_status_code")
    assert retired_blocked == blocked, f"{retired_blocked} retirements for {blocked} blocked sessions"
    created = metric_sum(metrics, "session_pool_sessions_created_total", pool=pool)
    # Each blocked session served LIMIT pages first; the others are at most the pool's size.
    assert blocked <= pages // LIMIT and created <= pages // LIMIT + POOL_SIZE, (blocked, created)
    assert len(site.tokens) <= created
    shared = [t for t, info in site.tokens.items() if info["crawlers"] - {info["issued_to"]}]
    if cross_process:
        # A cookie the site set for one process was sent by another that later got the same session.
        assert shared, "no session's cookie travelled from one crawler process to another"
    return {"blocked": blocked, "created": created, "shared_tokens": len(shared), "requests": len(site.requests)}


@pytest.mark.parametrize("kinds", [
    ["crawlee", "crawlee", "crawlee"],
    ["scrapy", "scrapy", "scrapy"],
    ["crawlee", "scrapy", "crawlee"],
], ids=["crawlee", "scrapy", "mixed"])
def test_three_crawler_processes_share_one_pool(server: Server, proxies, pool_name: str, tmp_path: Path,
                                                kinds: list[str]) -> None:
    site = Site(limit=LIMIT, delay=0.003).start()
    try:
        with SessionPoolClient(server.url) as client:
            client.put_pool(pool_name, {"max_pool_size": POOL_SIZE, "proxy_urls": [p.url for p in proxies]})
            procs = start_crawlers(kinds, server.url, site, pool_name, tmp_path, PAGES)
            rows = wait_crawlers(procs, tmp_path)
            summary = check_crawl(client, server, site, pool_name, rows, PAGES, proxies, cross_process=True)
        assert {r["kind"] for r in rows} == set(kinds)
        print(f"\n{'+'.join(kinds)}: {summary}")
    finally:
        site.stop()


def test_the_service_restarts_mid_crawl(tmp_path: Path, proxies, pool_name: str) -> None:
    pages = 150
    data_dir = tmp_path / "service"
    server = Server(data_dir, "--retired-retention-secs", "3600").start()
    site = Site(limit=LIMIT, delay=0.02).start()
    try:
        with SessionPoolClient(server.url, retry_timeout=60) as client:
            client.put_pool(pool_name, {"max_pool_size": POOL_SIZE, "proxy_urls": [p.url for p in proxies]})
            procs = start_crawlers(["crawlee", "scrapy"], server.url, site, pool_name, tmp_path, pages, concurrency=2)
            deadline = time.monotonic() + 60
            while len(site.ok_pages) < pages // 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            before = len(site.ok_pages)
            assert before < pages, "the crawl ended before the restart"
            assert server.stop() == 0, "SIGTERM did not stop the service cleanly"
            down = time.time()
            time.sleep(1.5)  # the crawlers find no service for a while
            during = len(site.requests)
            # Taken before the start: once the new process is ready the crawlers go on at once, possibly
            # before start() returns, and a page fetched then is not one fetched with the service down.
            up = time.time()
            restarted = Server(data_dir, "--retired-retention-secs", "3600", port=server.port).start()
            server = restarted
            rows = wait_crawlers(procs, tmp_path)
            assert len(site.ok_pages) > before
            # The outage was hit: each crawler fetched pages before it and after it, and none in the middle
            # of it (a page needs a session, and the crawlers waited for the service to give them one).
            for name in ("crawlee-0", "scrapy-1"):
                times = [r["t"] for r in site.requests if r["crawler"] == name]
                assert min(times) < down and max(times) > up, f"{name} did not crawl across the outage"
            fetched_while_down = [r for r in site.requests if down + 0.5 < r["t"] < up]
            assert not fetched_while_down, f"pages fetched with the service down: {fetched_while_down[:3]}"
            # Metrics restart from zero with the process: check what the state and the site show.
            urls = {f"{site.url}/page/{n}" for n in range(pages)}
            assert {r["url"] for r in rows} == urls and len(rows) == pages, "a page was lost across the restart"
            assert all(info["after_block"] == 0 for info in site.tokens.values())
            assert all(info["blocked"] in (0, 1) for info in site.tokens.values())
            held = {c.value for s in client.iter_sessions(pool_name) for c in s.cookies if c.name == "sid"}
            assert set(site.tokens) <= held, "a cookie set before the restart was lost by the service"
            print(f"\nrestart: {before} pages before SIGTERM, {during} requests by then, {len(site.requests)} in all")
    finally:
        site.stop()
        server.stop()
