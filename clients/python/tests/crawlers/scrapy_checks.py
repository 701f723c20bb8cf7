"""Scrapy specifics, run as its own process (Scrapy owns the reactor): a request with
meta["session_pool"] = False is left alone, the CookiesMiddleware keeps no jar for the pool's requests,
a blocked request is retried with a new session and lease, and a redirected request keeps its session.
Prints one JSON line."""

from __future__ import annotations

import json
import sys

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.downloadermiddlewares.cookies import CookiesMiddleware

service, site, pool = sys.argv[1:4]
seen: list[dict] = []


class Spider(scrapy.Spider):
    name = "checks"

    async def start(self):
        yield scrapy.Request(f"{site}/page/free", meta={"session_pool": False}, callback=self.parse_free)
        for n in range(8):
            yield scrapy.Request(f"{site}/page/{n}", dont_filter=True)
        for n in range(3):
            yield scrapy.Request(f"{site}/redirect/{n}", dont_filter=True)

    def parse_free(self, response):
        seen.append({"url": response.url, "session_id": response.meta.get("session_id"),
                     "cookie": (response.request.headers.get("Cookie") or b"").decode(), "free": True})

    def parse(self, response):
        seen.append({"url": response.url, "session_id": response.meta["session_id"],
                     "retries": response.meta.get("retry_times", 0), "status": response.status,
                     "redirect_urls": response.meta.get("redirect_urls", []),
                     "cookie": (response.request.headers.get("Cookie") or b"").decode()})


process = CrawlerProcess(settings={
    "DOWNLOADER_MIDDLEWARES": {"session_pool_client.scrapy.SessionPoolMiddleware": 650},
    "SESSION_POOL_URL": service, "SESSION_POOL_POOL": pool, "SESSION_POOL_LEASE_SECS": 20,
    "CONCURRENT_REQUESTS": 2, "RETRY_TIMES": 10, "LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False,
    "DEFAULT_REQUEST_HEADERS": {"X-Crawler": "checks"},
})
crawler = process.create_crawler(Spider)
process.crawl(crawler)
jars: list[int] = []


def inspect(spider):
    for mw in crawler.engine.downloader.middleware.middlewares:
        if isinstance(mw, CookiesMiddleware):
            jars.append(sum(len(jar) for jar in mw.jars.values()))


crawler.signals.connect(inspect, signal=scrapy.signals.spider_closed)
process.start()
print(json.dumps({"pages": seen, "cookie_middleware_cookies": jars, "stats": {
    k: v for k, v in crawler.stats.get_stats().items() if k.startswith(("session_pool/", "retry/"))}}))
