"""The clients against the real service: every operation, every error type, the waits and retries."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from session_pool_client import (
    ApiError,
    AsyncSessionPoolClient,
    Cookie,
    InvalidArgument,
    InvalidRequest,
    LeaseMismatch,
    LimitReached,
    MethodNotAllowed,
    NoSessionAvailable,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PoolConfig,
    PoolNotFound,
    RequestTimeout,
    ServiceUnavailable,
    SessionExists,
    SessionNotFound,
    SessionPoolClient,
    SessionSettings,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
)
from session_pool_client._client import _Call
from support import Server, free_port


@pytest.fixture
def client(server: Server):
    with SessionPoolClient(server.url) as c:
        yield c


def test_pools_round_trip(client: SessionPoolClient, pool_name: str) -> None:
    created = client.put_pool(pool_name, PoolConfig(max_pool_size=7, session=SessionSettings(max_usage_count=4),
                                                    proxy_urls=["http://127.0.0.1:9/"]))
    assert created.name == pool_name and created.config.max_pool_size == 7
    assert created.config.session.max_usage_count == 4 and created.config.session.max_age_secs == 3000
    assert created.config.proxy_urls == ["http://127.0.0.1:9/"]
    again = client.put_pool(pool_name, {"max_pool_size": 5})
    assert again.config.max_pool_size == 5 and again.config.session.max_usage_count == 50  # PUT replaces
    assert client.get_pool(pool_name).config.max_pool_size == 5
    assert pool_name in [p.name for p in client.list_pools()]
    client.delete_pool(pool_name)
    with pytest.raises(PoolNotFound) as e:
        client.get_pool(pool_name)
    assert e.value.status == 404 and pool_name in str(e.value)


def test_sessions_every_operation(client: SessionPoolClient, pool_name: str) -> None:
    client.put_pool(pool_name, {"max_pool_size": 0})  # acquire hands out only what is created here
    s = client.create_session(pool_name, id="user_1", user_data={"a": 1}, cookies={"lang": "en"}, max_usage_count=9)
    assert (s.id, s.pool, s.user_data, s.max_usage_count) == ("user_1", pool_name, {"a": 1}, 9)
    assert s.cookies == [Cookie(name="lang", value="en")]
    with pytest.raises(SessionExists):
        client.create_session(pool_name, id="user_1")
    assert client.get_session(pool_name, "user_1").id == "user_1"
    patched = client.patch_session(pool_name, "user_1", user_data={"a": None, "b": 2},
                                   cookies=[Cookie(name="sid", value="x", domain="shop.test")])
    assert patched.user_data == {"b": 2} and len(patched.cookies) == 2

    leased = client.acquire(pool_name, lease_secs=30, url="http://shop.test/p/1")
    assert leased.lease is not None and leased.leased_until is not None
    assert set(leased.cookie_header.split("; ")) == {"lang=en", "sid=x"}
    good = client.mark_good(pool_name, leased.id, lease_id=leased.lease.id, url="http://shop.test/p/1",
                            set_cookie=["theme=dark; Path=/"])
    assert good.usage_count == 1 and good.leased_until is None
    assert "theme=dark" in client.cookies_for_url(pool_name, "user_1", "http://shop.test/").cookie_header
    bad = client.mark_bad(pool_name, "user_1", cookies={"k": "v"})
    assert bad.error_score == 1 and bad.usage_count == 2
    stored = client.store_cookies(pool_name, "user_1", "http://shop.test/a", ["z=1; Path=/"])
    assert any(c.name == "z" for c in stored.cookies)
    result = client.report_status_code(pool_name, "user_1", 200, mark=True)
    assert not result.blocked and result.session.usage_count == 3

    other = client.create_session(pool_name, id="blocked.one")
    result = client.report_status_code(pool_name, other.id, 403)
    assert result.blocked and result.session.retired_reason == "blocked_status_code"
    third = client.create_session(pool_name)
    assert len(third.id) == 32
    assert client.retire(pool_name, third.id).retired_reason == "retired"

    page = client.list_sessions(pool_name, state="retired", limit=1)
    assert len(page.sessions) == 1 and page.next_cursor is not None
    assert {s.id for s in client.iter_sessions(pool_name, state="retired", page_size=1)} == {"blocked.one", third.id}
    exported = client.export_pool(pool_name)
    assert {s["id"] for s in exported["sessions"]} == {"user_1", "blocked.one", third.id}
    crawlee_form = client.export_pool(pool_name, format="crawlee")
    assert "maxPoolSize" in crawlee_form
    imported = client.import_pool(pool_name + "-copy", exported)
    assert imported.imported == 3 and imported.skipped == []
    assert client.import_pool(pool_name + "-copy", exported).skipped[0]["reason"] == "exists"
    client.delete_session(pool_name, "user_1")
    with pytest.raises(SessionNotFound) as e:
        client.get_session(pool_name, "user_1")
    assert "user_1" in e.value.detail


def test_service_endpoints(client: SessionPoolClient) -> None:
    assert client.healthz() == {"status": "ok"}
    assert client.readyz() is True
    assert "http_requests_total" in client.metrics()
    assert client.openapi().startswith("openapi:")


def test_release_of_a_lease_that_ended_names_the_lease_and_session(client: SessionPoolClient, pool_name: str) -> None:
    s = client.acquire(pool_name, lease_secs=30)
    assert client.release(pool_name, s.id, s.lease.id).leased_until is None
    with pytest.raises(LeaseMismatch) as e:
        client.release(pool_name, s.id, s.lease.id)
    message = str(e.value)
    assert s.lease.id in message and s.id in message and "ended" in message
    assert e.value.status == 409 and e.value.type == "lease_mismatch"


def test_invalid_request_names_the_field(client: SessionPoolClient, pool_name: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        client.put_pool(pool_name, {"max_pool_size": -1})
    assert e.value.status == 400 and "max_pool_size" in e.value.detail
    with pytest.raises(InvalidRequest):
        client.put_pool(pool_name, {"no_such_field": 1})


def test_no_session_available_carries_retry_after_and_acquire_waits(client: SessionPoolClient, pool_name: str) -> None:
    client.put_pool(pool_name, {"max_pool_size": 0})
    with pytest.raises(NoSessionAvailable) as e:
        client.acquire(pool_name, lease_secs=10)
    assert e.value.retry_after is not None and e.value.retry_after >= 0 and e.value.status == 503
    started = time.monotonic()
    with pytest.raises(NoSessionAvailable):
        client.acquire(pool_name, lease_secs=10, wait_secs=0.6)
    assert 0.5 <= time.monotonic() - started < 3

    def produce() -> None:
        time.sleep(0.5)
        with SessionPoolClient(client.base_url) as producer:
            producer.create_session(pool_name, id="late")

    threading.Thread(target=produce).start()
    got = client.acquire(pool_name, lease_secs=10, wait_secs=10)
    assert got.id == "late" and time.monotonic() - started >= 0.5


async def test_async_client_acquire_waits_for_a_lease_to_end(server: Server, pool_name: str) -> None:
    async with AsyncSessionPoolClient(server.url) as client:
        await client.put_pool(pool_name, {"max_pool_size": 1})
        first = await client.acquire(pool_name, lease_secs=0.8)
        started = time.monotonic()
        second = await client.acquire(pool_name, lease_secs=5, wait_secs=10)
        assert second.id == first.id and time.monotonic() - started >= 0.5
        with pytest.raises(NoSessionAvailable):
            await client.acquire(pool_name, lease_secs=5)
        assert (await client.get_pool(pool_name)).leased_session_count == 1


def test_unauthorized_without_and_with_a_wrong_key(keyed_server: Server) -> None:
    with SessionPoolClient(keyed_server.url) as c:
        with pytest.raises(Unauthorized) as e:
            c.list_pools()
        assert "SESSION_POOL_API_KEY" in str(e.value)
        assert c.healthz() == {"status": "ok"}  # the service endpoints need no key
    with SessionPoolClient(keyed_server.url, api_key="wrong-key") as c:
        with pytest.raises(Unauthorized) as e:
            c.list_pools()
        assert "not accepted" in str(e.value) and e.value.status == 401
    with SessionPoolClient(keyed_server.url, api_key="right-key") as c:
        assert "default" in [p.name for p in c.list_pools()]


def test_key_and_url_from_the_environment(keyed_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_POOL_URL", keyed_server.url)
    monkeypatch.setenv("SESSION_POOL_API_KEY", "right-key")
    with SessionPoolClient() as c:
        assert c.base_url == keyed_server.url
        assert c.list_pools()


def test_limit_reached(tmp_path) -> None:
    srv = Server(tmp_path / "limits", "--max-pools", "2", "--max-sessions", "1").start()
    try:
        with SessionPoolClient(srv.url) as c:
            c.create_session("default")
            with pytest.raises(LimitReached) as e:
                c.create_session("default")
            assert e.value.status == 409
            c.put_pool("second")
            with pytest.raises(LimitReached):
                c.put_pool("third")
    finally:
        srv.stop()


def test_payload_too_large(client: SessionPoolClient, pool_name: str) -> None:
    with pytest.raises(PayloadTooLarge) as e:
        client.import_pool(pool_name, {"config": {}, "sessions": [], "padding": "x" * (2 << 20)})
    assert e.value.status == 413


def raw(client: SessionPoolClient, method: str, path: str, **kwargs) -> Exception:
    """Send something the client never sends, and turn the answer into the client's exception."""
    response = client._http.request(method, path, **kwargs)
    return client._error(_Call(method, path, lambda r: None, False), response)


def test_unsupported_media_type_and_method_not_allowed(client: SessionPoolClient, pool_name: str) -> None:
    error = raw(client, "PUT", f"/v1/pools/{pool_name}", content=b"max_pool_size=1", headers={"Content-Type": "text/plain"})
    assert isinstance(error, UnsupportedMediaType) and error.status == 415
    error = raw(client, "DELETE", f"/v1/pools/{pool_name}/acquire")
    assert isinstance(error, MethodNotAllowed) and error.status == 405


def test_a_base_url_with_a_wrong_prefix_gives_not_found(server: Server) -> None:
    with SessionPoolClient(server.url + "/api") as c:
        with pytest.raises(NotFound) as e:
            c.list_pools()
        assert e.value.status == 404 and "/api/v1/pools" in str(e.value)


def problem(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after:
        headers["Retry-After"] = retry_after
    body = {"type": code, "title": code, "status": status, "detail": f"{code} detail"}
    return httpx.Response(status, headers=headers, content=json.dumps(body).encode())


def test_request_timeout_and_not_ready_are_typed() -> None:
    # 408 needs a body that stalls for 30 s and not_ready a service mid-restart: the answers are made here,
    # in the service's exact form, and go through the same code as every other answer.
    answers = iter([problem(408, "request_timeout")])
    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(lambda r: next(answers))) as c:
        with pytest.raises(RequestTimeout) as e:
            c.put_pool("p", {})
        assert e.value.status == 408
    with SessionPoolClient("http://127.0.0.1:9", retry_timeout=0.3,
                           transport=httpx.MockTransport(lambda r: problem(503, "not_ready", "1"))) as c:
        with pytest.raises(NotReady) as e:
            c.get_pool("p")
        assert e.value.retry_after == 1


def test_not_ready_is_retried_for_every_call() -> None:
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return problem(503, "not_ready", "0")
        return httpx.Response(200, json={"status": "ok"})

    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        assert c.healthz() == {"status": "ok"}
    assert len(calls) == 3


#: Every call of the module docstring's lists: (arguments, whether a lost answer is repeated).
LOST_ANSWER_CALLS = {
    "healthz": ((), True), "metrics": ((), True), "openapi": ((), True), "list_pools": ((), True),
    "get_pool": (("p",), True), "list_sessions": (("p",), True), "get_session": (("p", "s1"), True),
    "cookies_for_url": (("p", "s1", "http://a.test/"), True), "export_pool": (("p",), True),
    "put_pool": (("p",), True), "delete_pool": (("p",), True), "delete_session": (("p", "s1"), True),
    "patch_session": (("p", "s1"), True), "store_cookies": (("p", "s1", "http://a.test/", ["a=1"]), True),
    "retire": (("p", "s1"), True), "release": (("p", "s1", "L1"), True),
    "report_status_code": (("p", "s1", 200), True),
    "acquire(retry_lost_answers=True)": (("p",), True),
    "readyz": ((), False),  # a readiness probe answers now: never retried at all
    "acquire": (("p",), False), "create_session": (("p",), False), "mark_good": (("p", "s1"), False),
    "mark_bad": (("p", "s1"), False), "report_status_code(mark=True)": (("p", "s1", 200), False),
    "import_pool": (("p", {"sessions": []}), False),
}


@pytest.mark.parametrize("name", list(LOST_ANSWER_CALLS))
def test_lost_connections_are_retried_only_for_safe_calls(name: str) -> None:
    args, repeated = LOST_ANSWER_CALLS[name]
    method, _, option = name.partition("(")
    kwargs = {option.split("=")[0]: True} if option else {}
    attempts: list[str] = []

    def broken(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ReadError("connection reset", request=request)

    with SessionPoolClient("http://127.0.0.1:9", retry_timeout=0.3, transport=httpx.MockTransport(broken)) as c:
        with pytest.raises(ServiceUnavailable) as e:
            getattr(c, method)(*args, **kwargs)
    assert "connection reset" in str(e.value)
    if repeated:
        assert len(attempts) > 1, f"{name} is idempotent: a lost answer is repeated"
    else:
        assert len(attempts) == 1, f"{name} was sent again after its answer was lost"


def test_the_docstring_lists_every_call() -> None:
    from session_pool_client._client import OPERATIONS
    assert {m for _, _, m in OPERATIONS.values()} == {n.partition("(")[0] for n in LOST_ANSWER_CALLS}


@pytest.mark.parametrize("first", ["answer-lost", "not-sent"])
def test_a_repeated_release_takes_lease_mismatch_as_success_only_after_a_lost_answer(first: str) -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if len(calls) == 1:
            error = httpx.ReadError if first == "answer-lost" else httpx.ConnectError
            raise error("connection reset", request=request)
        if request.method == "POST":
            return problem(409, "lease_mismatch")
        return httpx.Response(200, json=session_json(None))

    path = "/v1/pools/p/sessions/s1"
    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        if first == "answer-lost":  # the first attempt ended the lease: the repeat's mismatch is its success
            assert c.release("p", "s1", "L1").leased_until is None
            assert calls == [f"POST {path}/release", f"POST {path}/release", f"GET {path}"]
        else:  # nothing was sent the first time: the mismatch is the service's answer to this release
            with pytest.raises(LeaseMismatch):
                c.release("p", "s1", "L1")
            assert calls == [f"POST {path}/release", f"POST {path}/release"]


def test_wrong_url_gives_a_clear_error_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    with SessionPoolClient(f"http://127.0.0.1:{port}", retry_timeout=0.5) as c:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as e:
            c.get_pool("shop")
        assert f"127.0.0.1:{port}" in str(e.value) and time.monotonic() - started < 3
        assert isinstance(e.value, ConnectionError)
    with pytest.raises(InvalidArgument, match="not an http"):
        SessionPoolClient("127.0.0.1:8080")
    monkeypatch.delenv("SESSION_POOL_URL", raising=False)
    with pytest.raises(InvalidArgument, match="SESSION_POOL_URL"):
        SessionPoolClient()


def test_a_url_that_is_not_the_service(server: Server) -> None:
    from support import Site
    site = Site(limit=5).start()
    try:
        with SessionPoolClient(site.url) as c:
            with pytest.raises(UnexpectedResponse) as e:
                c.get_pool("shop")
            assert site.url in str(e.value) and "session-pool" in str(e.value)
    finally:
        site.stop()


def test_bad_input_is_named_before_anything_is_sent(client: SessionPoolClient) -> None:
    with pytest.raises(InvalidArgument, match="'my shop'"):
        client.acquire("my shop")
    with pytest.raises(InvalidArgument, match="session id 'a/b'"):
        client.get_session("default", "a/b")
    with pytest.raises(InvalidArgument, match="lease_secs 0"):
        client.acquire("default", lease_secs=0)
    with pytest.raises(InvalidArgument, match="not an absolute http"):
        client.acquire("default", url="/relative")
    with pytest.raises(InvalidArgument, match="both"):
        client.mark_good("default", "x", url="http://a.test/")
    with pytest.raises(InvalidArgument, match="status_code 1000"):
        client.report_status_code("default", "x", 1000)
    assert isinstance(InvalidArgument("x"), ValueError)


def test_every_problem_type_of_the_spec_has_a_class() -> None:
    import yaml

    from session_pool_client import PROBLEM_TYPES
    from support import REPO
    spec = yaml.safe_load((REPO / "openapi.yaml").read_text())
    codes = set(spec["components"]["schemas"]["Problem"]["properties"]["type"]["enum"])
    assert codes == set(PROBLEM_TYPES)
    for code, cls in PROBLEM_TYPES.items():
        assert issubclass(cls, ApiError) and cls.code == code


def session_json(leased_until: str | None, usage_count: int = 0) -> dict:
    return {
        "id": "s1", "pool": "p", "created_at": "2026-11-25T19:00:00Z", "expires_at": "2026-11-25T19:50:00Z",
        "max_age_secs": 3000, "usage_count": usage_count, "max_usage_count": 50, "error_score": 0.0,
        "max_error_score": 3.0, "error_score_decrement": 0.5, "blocked_status_codes": [401, 403, 429],
        "user_data": {}, "cookies": [], "proxy_url": None, "is_blocked": False, "is_expired": False,
        "is_max_usage_count_reached": False, "is_usable": True, "retired": False, "retired_reason": None,
        "retired_at": None, "leased_until": leased_until,
    }


@pytest.mark.parametrize("case", ["lost-on-the-way", "answer-lost", "lease-ran-out", "retired"])
def test_a_report_with_its_lease_learns_whether_it_arrived(case: str) -> None:
    from session_pool_client import Lease
    from session_pool_client._models import _ts
    lease = Lease(id="L1", expires_at=_ts("2026-11-25T19:00:30.123Z"))
    # When the service read the session (its Date): 10 s before the lease's end, or after it ran out.
    read_at = "Wed, 25 Nov 2026 19:00:31 GMT" if case == "lease-ran-out" else "Wed, 25 Nov 2026 19:00:20 GMT"
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response", request=request)
        if request.method == "GET":  # the session: still under the lease unless the report arrived, or it ran out
            body = session_json("2026-11-25T19:00:30.123Z" if case == "lost-on-the-way" else None,
                                int(case == "answer-lost"))
            if case == "retired":  # retired by another crawler meanwhile: its lease ended with it
                body.update(retired=True, retired_reason="retired", is_usable=False)
            return httpx.Response(200, json=body, headers={"Date": read_at})
        assert json.loads(request.content)["lease_id"] == "L1"
        if request.url.path.endswith("/status_code"):
            return httpx.Response(200, json={"blocked": True, "session": session_json(None, 1)})
        return httpx.Response(200, json=session_json(None, 1))

    path = "/v1/pools/p/sessions/s1"
    if case == "lease-ran-out":  # the lease ended, but maybe by running out: the report may not have arrived
        with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
            with pytest.raises(ServiceUnavailable, match="may not have arrived"):
                c.mark_good("p", "s1", lease_id=lease)
        assert calls == [f"POST {path}/mark_good", f"GET {path}"]
        calls.clear()
        with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
            with pytest.raises(ServiceUnavailable, match="may not have arrived"):
                c.report_status_code("p", "s1", 403, mark=True, lease_id=lease)
        assert calls == [f"POST {path}/status_code", f"GET {path}"]
        return
    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        result = c.mark_good("p", "s1", lease_id=lease)
    assert result.usage_count == 1 and result.leased_until is None
    if case == "answer-lost":  # not sent twice: the session read before the lease's end shows it ended
        assert calls == [f"POST {path}/mark_good", f"GET {path}"]
    else:  # still leased (it did not arrive), or retired (a report changes nothing then): sent again
        assert calls == [f"POST {path}/mark_good", f"GET {path}", f"POST {path}/mark_good"]
    calls.clear()
    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(ServiceUnavailable):
            c.mark_good("p", "s1", lease_id="L1")  # a bare lease id cannot be checked: not repeated
    assert calls == [f"POST {path}/mark_good"]


def test_a_lost_report_whose_session_is_gone_says_so() -> None:
    from session_pool_client import Lease
    from session_pool_client._models import _ts

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadError("connection reset", request=request)
        return problem(404, "session_not_found")

    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(SessionNotFound):  # the service answered: not "could not reach"
            c.mark_bad("p", "s1", lease_id=Lease(id="L1", expires_at=_ts("2026-11-25T19:00:30Z")))


def test_an_acquire_whose_answer_was_lost_is_repeated_only_when_asked() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json=session_json(None))

    with SessionPoolClient("http://127.0.0.1:9", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(ServiceUnavailable):
            c.acquire("p", lease_secs=5)
        assert len(calls) == 1
        calls.clear()
        assert c.acquire("p", lease_secs=5, retry_lost_answers=True).id == "s1"
        assert len(calls) == 2


def test_timestamps_parse_as_python_3_10_would_need(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service writes 0 to 9 fractional digits and a `Z`; Python 3.10's `datetime.fromisoformat`
    takes neither. Here `fromisoformat` behaves as 3.10's, and the parse must not depend on it."""
    from datetime import datetime, timedelta, timezone

    from session_pool_client import _models

    class Py310Datetime(datetime):
        @classmethod
        def fromisoformat(cls, value: str):  # type: ignore[override]
            fraction = value[19:].split("+")[0].split("-")[0]
            if value.endswith("Z") or (fraction and len(fraction) - 1 not in (3, 6)):
                raise ValueError(f"Invalid isoformat string: {value!r}")
            return super().fromisoformat(value)

    monkeypatch.setattr(_models, "datetime", Py310Datetime)
    utc = timezone.utc
    assert _models._ts("2026-11-25T19:00:30.123456789Z") == datetime(2026, 11, 25, 19, 0, 30, 123456, tzinfo=utc)
    assert _models._ts("2026-11-25T19:00:30Z") == datetime(2026, 11, 25, 19, 0, 30, tzinfo=utc)
    assert _models._ts("2026-11-25T19:00:30.1Z").microsecond == 100000
    assert _models._ts("2026-11-25T19:00:30.5+02:00") == datetime(2026, 11, 25, 17, 0, 30, 500000, tzinfo=utc)
    assert _models._ts("2026-11-25T19:00:30-01:30").utcoffset() == -timedelta(hours=1, minutes=30)
    session = _models.Session.from_json(session_json("2026-11-25T19:00:30.999999999Z"))
    assert session.leased_until == datetime(2026, 11, 25, 19, 0, 30, 999999, tzinfo=utc)
    with pytest.raises(ValueError, match="RFC 3339"):
        _models._ts("yesterday")


@pytest.mark.parametrize("where", ["nothing-listening", "no-such-host"])
async def test_async_client_with_a_wrong_url_fails_in_seconds_naming_it(where: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if where == "nothing-listening" else "http://no-such-host.invalid:8080"
    async with AsyncSessionPoolClient(url) as client:  # the defaults: retry_timeout 30 s
        for call in (client.get_pool("shop"), client.acquire("shop", lease_secs=30, wait_secs=120, retry_lost_answers=True)):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as e:
                await call
            assert time.monotonic() - started < 4, "a URL that never answered was retried as if it were restarting"
            assert url in str(e.value) and "nothing has answered" in str(e.value)


def test_a_service_that_has_answered_is_waited_for_across_a_restart(tmp_path) -> None:
    srv = Server(tmp_path / "restarting").start()
    restart = threading.Timer(3.0, srv.start)  # down longer than a URL that never answered is tried
    try:
        with SessionPoolClient(srv.url, retry_timeout=20) as c:
            c.put_pool("shop", {"max_pool_size": 3})
            srv.stop()
            restart.start()
            started = time.monotonic()
            assert c.get_pool("shop").config.max_pool_size == 3
            assert time.monotonic() - started >= 2.5
    finally:
        if restart.is_alive():
            restart.join()
        srv.stop()
