"""A Scrapy crawler on the shared pool, run as its own process by the tests; the same arguments and
output as crawlee_crawl.py."""

from __future__ import annotations

import argparse
import json
import re
import time

import scrapy
from scrapy.crawler import CrawlerProcess

from session_pool_client.scrapy import SessionPoolMiddleware


class TimedMiddleware(SessionPoolMiddleware):
    """Records the time each page spends in the middleware (the acquire and the report)."""

    timings: list[dict] = []

    async def process_request(self, request, spider):
        started = time.perf_counter()
        result = await super().process_request(request, spider)
        request.meta["_t_acquire"] = time.perf_counter() - started
        return result

    async def process_response(self, request, response, spider):
        started = time.perf_counter()
        result = await super().process_response(request, response, spider)
        if "_t_acquire" in request.meta:
            TimedMiddleware.timings.append({
                "session": request.meta.get("session_id"), "acquire": request.meta.pop("_t_acquire"),
                "report": time.perf_counter() - started,
            })
        return result


class PagesSpider(scrapy.Spider):
    name = "pages"

    def __init__(self, site: str, pages: str, crawler_name: str, out: str, **kwargs):
        super().__init__(**kwargs)
        start, stop, step = (int(x) for x in pages.split(":"))
        self.urls = [f"{site}/page/{n}" for n in range(start, stop, step)]
        self.crawler_name = crawler_name
        self.out = open(out, "a", buffering=1)  # noqa: SIM115

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url, dont_filter=True)

    def parse(self, response):
        token = re.search(r"id='token'>([^<]*)<", response.text)
        self.out.write(json.dumps({
            "url": response.url, "status": response.status, "session_id": response.meta.get("session_id"),
            "token": token.group(1) if token else None, "crawler": self.crawler_name, "kind": "scrapy",
        }) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--pages", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--proxies", action="store_true")  # the pool's proxy_urls decide; kept for symmetry
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timing")
    args = parser.parse_args()

    process = CrawlerProcess(settings={
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
        "DOWNLOADER_MIDDLEWARES": {"__main__.TimedMiddleware": 650},
        "SESSION_POOL_URL": args.service,
        "SESSION_POOL_POOL": args.pool,
        "SESSION_POOL_LEASE_SECS": 30,
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "RETRY_TIMES": 20,
        "DOWNLOAD_TIMEOUT": 30,
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "DEFAULT_REQUEST_HEADERS": {"X-Crawler": args.name},
    })
    crawler = process.create_crawler(PagesSpider)
    process.crawl(crawler, site=args.site, pages=args.pages, crawler_name=args.name, out=args.out)
    process.start()
    stats = crawler.stats.get_stats()
    if args.timing:
        with open(args.timing, "w") as f:
            for record in TimedMiddleware.timings:
                f.write(json.dumps(record) + "\n")
    failed = {k: v for k, v in stats.items() if k.startswith("log_count/ERROR") or k == "session_pool/report_failed"}
    if failed:
        raise SystemExit(f"the crawl had errors: {failed}")


if __name__ == "__main__":
    main()
