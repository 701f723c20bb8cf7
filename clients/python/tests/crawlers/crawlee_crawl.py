"""A Crawlee for Python crawler on the shared pool, run as its own process by the tests.

    python crawlee_crawl.py --service URL --pool NAME --site URL --pages 0:300:3 --name c1 --out pages.jsonl
        [--proxies] [--concurrency 4] [--timing timing.jsonl]

Each fetched page is a JSON line: url, status, session_id, the token the site saw, the crawler's name.
With --timing, the time spent in the pool per page (get_session + the report) is written too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

from crawlee import ConcurrencySettings, Request
from crawlee.crawlers import HttpCrawler, HttpCrawlingContext
from crawlee.storage_clients import MemoryStorageClient

from session_pool_client.crawlee import RemoteSession, RemoteSessionPool, SessionProxyConfiguration


class TimedPool(RemoteSessionPool):
    """Records how long each page waits on the service: the acquire, and the report's round trip."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.timings: list[dict] = []

    async def get_session(self):
        started = time.perf_counter()
        session = await super().get_session()
        self.timings.append({"session": session.id, "acquire": time.perf_counter() - started})
        return session

    def _report(self, session: RemoteSession, kind: str):
        started = time.perf_counter()
        task = super()._report(session, kind)
        assert task is not None  # called on the pool's loop
        record = {"session": session.id, "kind": kind}
        self.timings.append(record)
        task.add_done_callback(lambda _t: record.__setitem__("report", time.perf_counter() - started))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--pages", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--proxies", action="store_true")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timing")
    args = parser.parse_args()
    start, stop, step = (int(x) for x in args.pages.split(":"))

    pool = TimedPool(url=args.service, pool=args.pool, lease_secs=30, acquire_timeout_secs=120)
    out = open(args.out, "a", buffering=1)  # noqa: SIM115
    crawler = HttpCrawler(
        session_pool=pool,
        proxy_configuration=SessionProxyConfiguration(pool) if args.proxies else None,
        storage_client=MemoryStorageClient(),
        concurrency_settings=ConcurrencySettings(
            min_concurrency=args.concurrency, max_concurrency=args.concurrency, desired_concurrency=args.concurrency
        ),
        max_request_retries=5,
        max_session_rotations=20,
        configure_logging=False,
    )

    @crawler.router.default_handler
    async def handle(context: HttpCrawlingContext) -> None:
        body = (await context.http_response.read()).decode()
        token = re.search(r"id='token'>([^<]*)<", body)
        out.write(json.dumps({
            "url": context.request.url, "status": context.http_response.status_code,
            "session_id": context.session.id if context.session else None,
            "token": token.group(1) if token else None, "crawler": args.name, "kind": "crawlee",
        }) + "\n")

    requests = [
        Request.from_url(f"{args.site}/page/{n}", headers={"X-Crawler": args.name}) for n in range(start, stop, step)
    ]
    await crawler.run(requests)
    out.close()
    if args.timing:
        with open(args.timing, "w") as f:
            for record in pool.timings:
                f.write(json.dumps(record) + "\n")
    if pool.report_errors:
        raise SystemExit(f"{len(pool.report_errors)} reports did not reach the service: {pool.report_errors[:3]}")


if __name__ == "__main__":
    asyncio.run(main())
