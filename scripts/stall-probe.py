#!/usr/bin/env python3
"""How long requests wait while a large pool fills and is persisted, and what memory it takes.

Starts the release binary on a fresh data directory, probes `GET /healthz` and an acquire on a small
pool every 10 ms from two threads, fills a pool of SIZE sessions (one acquire) and waits until its
first write is on disk. Prints p50 / p99 / max of each probe over that window, the fill and write
times, the peak resident memory; then restarts on the same directory and prints the restore time and
the resident memory after it.

    cargo build --release --locked && python3 scripts/stall-probe.py [SIZE]   # default 1000000

Standard library only. Loopback only; every loop is bounded in time.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "session-pool")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def metric(port, name):
    _, text = request(port, "GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields.get("VmRSS"), fields.get("VmHWM")


def start(data_dir, port):
    process = subprocess.Popen(
        [BIN, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    deadline = started + 120
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/readyz", timeout=2)[0] == 200:
                return process, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    process.kill()
    sys.exit("the server did not become ready")


def probe(port, method, path, body, out, stop):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = None if body is None else json.dumps(body)
    headers = {"content-type": "application/json"} if body is not None else {}
    while not stop.is_set():
        began = time.monotonic()
        conn.request(method, path, payload, headers)
        response = conn.getresponse()
        response.read()
        out.append((time.monotonic() - began) * 1000)
        time.sleep(0.01)
    conn.close()


def summary(name, samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    print(f"{name}: {len(ordered)} probes, p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {ordered[-1]:.1f} ms")


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    data_dir = tempfile.mkdtemp(prefix="session-pool-stall-")
    port = free_port()
    server, _ = start(data_dir, port)
    try:
        request(port, "POST", "/v1/pools/small/sessions", {"id": "probe"})
        request(port, "PUT", "/v1/pools/big", {"max_pool_size": size})
        stop = threading.Event()
        health, acquire = [], []
        threads = [
            threading.Thread(target=probe, args=(port, "GET", "/healthz", None, health, stop)),
            threading.Thread(target=probe, args=(port, "POST", "/v1/pools/small/acquire", {}, acquire, stop)),
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)
        began = time.monotonic()
        status, _ = request(port, "POST", "/v1/pools/big/acquire", {})
        filled = time.monotonic() - began
        assert status == 200, status
        deadline = time.monotonic() + 600
        while metric(port, "session_pool_persist_sessions_written_total") < size + 1:
            if time.monotonic() > deadline:
                sys.exit("the first write did not finish within 10 minutes")
            time.sleep(0.05)
        written = time.monotonic() - began
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        rss, peak = memory(server.pid)
        print(f"fill of {size} sessions: {filled:.2f} s; filled and written: {written:.2f} s")
        summary("GET /healthz during fill and write", health)
        summary("acquire on a small pool during fill and write", acquire)
        print(f"resident memory after the write: {rss}, peak: {peak}")
        print(f"state on disk: {sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)) / 2**20:.0f} MiB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)

    server, restore = start(data_dir, port)
    try:
        rss, peak = memory(server.pid)
        print(f"restart: ready after {restore:.2f} s; resident memory {rss}, peak {peak}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        subprocess.run(["rm", "-rf", data_dir], check=False)


if __name__ == "__main__":
    main()
