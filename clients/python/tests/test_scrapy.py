"""SessionPoolMiddleware: its settings, and its behaviour in a real Scrapy crawl (in a process of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scrapy.exceptions import NotConfigured
from types import SimpleNamespace

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


def test_a_crawl(server: Server, pool_name: str) -> None:
    site = Site(limit=2).start()
    try:
        with SessionPoolClient(server.url) as client:
            client.put_pool(pool_name, {"max_pool_size": 2})
        proc = subprocess.run([sys.executable, str(HERE / "crawlers" / "scrapy_checks.py"), server.url, site.url,
                               pool_name], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        pages = result["pages"]
        free = [p for p in pages if p.get("free")]
        assert len(free) == 1 and free[0]["session_id"] is None  # meta["session_pool"] = False: left alone
        pooled = [p for p in pages if not p.get("free")]
        assert len(pooled) == 8
        # Scrapy's CookiesMiddleware stayed enabled and kept no cookie of the pool's requests; the one
        # cookie it holds is from the request outside the pool.
        assert result["cookie_middleware_cookies"] == [2]
        # 2 uses per cookie then 403: blocked requests were retried, each with a session other than the
        # one that was blocked, and every Cookie header sent was the serving session's own.
        retried = [p for p in pooled if p["retries"]]
        assert retried and result["stats"].get("session_pool/blocked/403", 0) == sum(p["retries"] for p in retried)
        assert result["stats"]["retry/reason_count/session blocked (403)"] == sum(p["retries"] for p in retried)
        with SessionPoolClient(server.url) as client:
            sessions = {s.id: s for s in client.iter_sessions(pool_name)}
        for info in site.tokens.values():
            assert info["after_block"] == 0 and info["blocked"] <= 1
        blocked_ids = {s.id for s in sessions.values() if s.retired_reason == "blocked_status_code"}
        assert len(blocked_ids) == result["stats"]["session_pool/blocked/403"]
        assert not [r for r in site.requests if r["status"] == 400]
    finally:
        site.stop()
