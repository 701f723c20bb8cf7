"""What the tests start: the real session-pool binary, a target site that blocks sessions, and small
forwarding proxies. Everything listens on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> Path:
    path = Path(os.environ.get("SESSION_POOL_BIN", REPO / "target" / "release" / "session-pool"))
    if not path.is_file():
        raise RuntimeError(f"the session-pool binary {path} is missing: run cargo build --release (or set SESSION_POOL_BIN)")
    return path


class Server:
    """The session-pool binary on a free port of 127.0.0.1, with its own data dir."""

    def __init__(self, data_dir: Path, *args: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 30) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_POOL_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(server_binary()), "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"session-pool exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"session-pool did not become ready in {timeout} s")

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def v1_requests(metrics: dict[str, float]) -> float:
    """The `/v1` requests counted by `http_requests_total`."""
    return sum(v for k, v in metrics.items() if k.startswith("http_requests_total{") and 'route="/v1' in k)


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        if not key.startswith(name + "{") and key != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


class Site:
    """A target site that blocks sessions, for crawlers to fetch `/page/N`.

    A request without the `sid` cookie is a session's first visit: the site issues a new token in
    `Set-Cookie` (use 1). A request with a token counts one more use of it; past `limit` uses the answer
    is 403. An unknown token is a 400. Every request is recorded with the proxy it came through (the
    proxies add `X-Via-Proxy`) and the crawler that sent it (`X-Crawler`). The first visit also sets
    `seen_<crawler>=1`: without an `X-Crawler` header that name is `seen_?`, which Python's cookie jar
    keeps and the service's Cookie schema refuses (a client must not lose its report over it).

    `/redirect/N` answers 302 to `/landing/N` with a new cookie `hop_N`, and `/landing/N` answers 200;
    neither counts as a use of the token. Each request's `hop_N` cookie (N from its path) is recorded.
    `/favicon.ico`, which a browser asks for after a page, is a 404 that counts nothing.
    """

    def __init__(self, limit: int, delay: float = 0.0) -> None:
        self.limit = limit
        self.delay = delay
        self.lock = threading.Lock()
        self.tokens: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.ok_pages: dict[str, int] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, headers, body = site.handle(self)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> Site:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> tuple[int, list[tuple[str, str]], bytes]:
        if urlsplit(req.path).path == "/favicon.ico":
            # A browser's own request after a page (PlaywrightCrawler's Chromium): not a visit.
            return 404, [], b""
        if self.delay:
            time.sleep(self.delay)
        cookie = SimpleCookie(req.headers.get("Cookie", ""))
        token = cookie["sid"].value if "sid" in cookie else None
        proxy = req.headers.get("X-Via-Proxy")
        crawler = req.headers.get("X-Crawler", "?")
        path = urlsplit(req.path).path
        headers: list[tuple[str, str]] = []
        hop_cookie = f"hop_{path.rsplit('/', 1)[1]}"
        hop = cookie[hop_cookie].value if hop_cookie in cookie else None
        with self.lock:
            record = {"path": path, "token": token, "proxy": proxy, "crawler": crawler, "t": time.time(), "hop": hop}
            if path.startswith(("/redirect/", "/landing/")):
                if path.startswith("/redirect/"):
                    record["hop_set"] = uuid.uuid4().hex
                    headers += [("Location", "/landing/" + path.rsplit("/", 1)[1]),
                                ("Set-Cookie", f"{hop_cookie}={record['hop_set']}; Path=/")]
                record["status"] = status = 302 if "hop_set" in record else 200
                self.requests.append(record)
                return status, headers, b"<html><body>moved</body></html>" if status == 302 else b"<html>landed</html>"
            if token is None:
                token = uuid.uuid4().hex
                self.tokens[token] = {"uses": 1, "issued_to": crawler, "crawlers": {crawler}, "proxies": {proxy},
                                      "blocked": 0, "after_block": 0}
                headers.append(("Set-Cookie", f"sid={token}; Path=/; HttpOnly"))
                headers.append(("Set-Cookie", f"seen_{crawler}=1; Path=/"))
                status = 200
                record["new_token"] = token
            elif token not in self.tokens:
                status = 400
            else:
                info = self.tokens[token]
                if info["blocked"]:
                    info["after_block"] += 1
                info["uses"] += 1
                info["crawlers"].add(crawler)
                info["proxies"].add(proxy)
                if info["uses"] > self.limit:
                    info["blocked"] += 1
                    status = 403
                else:
                    status = 200
            record["status"] = status
            self.requests.append(record)
            if status == 200:
                self.ok_pages[path] = self.ok_pages.get(path, 0) + 1
        body = f"<html><body><p id='token'>{token}</p><p id='status'>{status}</p></body></html>".encode()
        return status, headers, body


class Proxy:
    """A small forwarding HTTP proxy (absolute-form requests, no CONNECT) that adds `X-Via-Proxy: NAME`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.count = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                target = urlsplit(self.path)
                if not target.hostname:
                    self.send_error(400, "absolute-form request expected")
                    return
                proxy.count += 1
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "proxy-authorization", "connection", "keep-alive")}
                headers["X-Via-Proxy"] = proxy.name
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
                try:
                    path = target.path or "/"
                    if target.query:
                        path += "?" + target.query
                    conn.request("GET", path, headers=headers)
                    upstream = conn.getresponse()
                    body = upstream.read()
                    self.send_response(upstream.status)
                    for k, v in upstream.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    conn.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> Proxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
