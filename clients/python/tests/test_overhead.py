"""Measured: the time a page spends on the service (loopback), and the service calls per page, for
both integrations. The figures go to target/python-client-overhead.json and the test output; the
README quotes them."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from session_pool_client import SessionPoolClient
from support import REPO, Server, Site, v1_requests

HERE = Path(__file__).parent
PAGES = 300


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@pytest.mark.parametrize("kind", ["crawlee", "scrapy"])
def test_overhead_per_page(tmp_path: Path, kind: str) -> None:
    server = Server(tmp_path / "service").start()
    site = Site(limit=10_000).start()
    try:
        with SessionPoolClient(server.url) as client:
            client.put_pool("bench", {"max_pool_size": 4})
        before = v1_requests(server.metrics())
        out, timing = tmp_path / "pages.jsonl", tmp_path / "timing.jsonl"
        script = HERE / "crawlers" / f"{kind}_crawl.py"
        proc = subprocess.run(
            [sys.executable, str(script), "--service", server.url, "--pool", "bench", "--site", site.url,
             "--pages", f"0:{PAGES}:1", "--name", kind, "--out", str(out), "--timing", str(timing),
             "--concurrency", "2"],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        calls = v1_requests(server.metrics()) - before
        pages = len(out.read_text().splitlines())
        assert pages == PAGES
        records = [json.loads(line) for line in timing.read_text().splitlines()]
        acquire = [r["acquire"] * 1000 for r in records if "acquire" in r]
        report = [r["report"] * 1000 for r in records if "report" in r]
        assert len(acquire) == PAGES and len(report) == PAGES
        if kind == "scrapy":
            per_page = [a + r for a, r in zip(acquire, report, strict=True)]  # both on the request's path
        else:
            per_page = acquire  # Crawlee's report is sent in the background
        figures = {
            "integration": kind, "pages": pages, "service_calls": calls, "calls_per_page": round(calls / pages, 3),
            "added_ms_p50": round(pct(per_page, 0.50), 2), "added_ms_p99": round(pct(per_page, 0.99), 2),
            "acquire_ms_p50": round(pct(acquire, 0.50), 2), "acquire_ms_p99": round(pct(acquire, 0.99), 2),
            "report_ms_p50": round(pct(report, 0.50), 2), "report_ms_p99": round(pct(report, 0.99), 2),
            "acquire_ms_mean": round(statistics.fmean(acquire), 2),
        }
        print(f"\noverhead {json.dumps(figures)}")
        target = REPO / "target" / "python-client-overhead.json"
        existing = json.loads(target.read_text()) if target.exists() else {}
        existing[kind] = figures
        target.write_text(json.dumps(existing, indent=2) + "\n")
        # Two calls per page (acquire, one report), plus the pool's configuration read at the start.
        assert calls <= 2 * PAGES + 2, figures
        assert figures["added_ms_p50"] < 50, figures
    finally:
        site.stop()
        server.stop()
