"""Our port of the cases of Crawlee for Python's tests/unit/sessions/test_session_pool.py (1.11), with
`RemoteSessionPool` in place of `SessionPool`, each pool a fresh one in the real service.

Left out: `test_session_pool_persist` and `test_session_pool_persist_and_restore`, which test the
persistence of the pool's state into Crawlee's key-value store; here the service keeps and persists the
pool, so there is no key-value-store state to write or restore (`persistence_enabled` is accepted and
ignored, and `reset_store()` leaves the shared pool alone: see the last test)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import datetime, timezone

import pytest
from crawlee.sessions import Session, SessionPool

from session_pool_client import SessionPoolClient
from session_pool_client.crawlee import RemoteSession, RemoteSessionPool
from support import Server

SIZE = 3


@pytest.fixture
async def remote_pool(server: Server, pool_name: str):
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=SIZE) as sp:
        yield sp


async def test_a_new_pool_is_filled_to_its_size(remote_pool: RemoteSessionPool) -> None:
    assert isinstance(remote_pool, SessionPool)
    assert remote_pool.session_count == SIZE
    assert remote_pool.usable_session_count == SIZE
    assert remote_pool.retired_session_count == 0


async def test_added_sessions_count(remote_pool: RemoteSessionPool) -> None:
    remote_pool.add_session(session=Session(id="test_session_01"))
    remote_pool.add_session(session=Session(id="test_session_02"))
    assert remote_pool.session_count == SIZE + 2
    assert remote_pool.usable_session_count == SIZE + 2
    assert remote_pool.retired_session_count == 0


async def test_a_duplicate_is_not_added_and_warns(remote_pool: RemoteSessionPool, caplog: pytest.LogCaptureFixture) -> None:
    remote_pool.add_session(session=Session(id="test_session_01", user_data={"first": True}))
    assert remote_pool.session_count == SIZE + 1
    with caplog.at_level(logging.WARNING):
        remote_pool.add_session(session=Session(id="test_session_01", user_data={"second": True}))
    assert remote_pool.session_count == SIZE + 1
    assert "test_session_01 already exists" in caplog.text
    kept = await remote_pool.get_session_by_id("test_session_01")
    assert kept is not None and kept.user_data == {"first": True}


async def test_get_session_is_usable(remote_pool: RemoteSessionPool) -> None:
    session = await remote_pool.get_session()
    assert isinstance(session, RemoteSession)
    assert session.expires_at >= datetime.now(timezone.utc)
    assert not session.is_blocked
    assert not session.is_expired
    assert not session.is_max_usage_count_reached
    assert session.is_usable


async def test_unknown_or_unusable_ids_give_none(remote_pool: RemoteSessionPool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert await remote_pool.get_session_by_id("non_existent") is None
    assert "non_existent not found" in caplog.text
    session = Session(id="test_session_not_usable")
    session.retire()
    assert not session.is_usable
    remote_pool.add_session(session=session)
    assert remote_pool.session_count == SIZE + 1
    with caplog.at_level(logging.WARNING):
        assert await remote_pool.get_session_by_id("test_session_not_usable") is None
    assert "test_session_not_usable is not usable" in caplog.text


async def test_create_session_function(server: Server, pool_name: str) -> None:
    user_data = {"created_by": "test_create_session_function"}
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=SIZE,
                                 create_session_function=lambda: Session(user_data=user_data)) as sp:
        session = await sp.get_session()
        assert session is not None
        assert session.user_data == user_data
        assert sp.session_count == SIZE


async def test_methods_raise_error_when_not_active(server: Server, pool_name: str) -> None:
    session = Session()
    session_pool = RemoteSessionPool(url=server.url, pool=pool_name)
    assert session_pool.active is False
    with pytest.raises(RuntimeError, match=r"SessionPool is not active."):
        session_pool.get_state(as_dict=True)
    with pytest.raises(RuntimeError, match=r"SessionPool is not active."):
        session_pool.add_session(session)
    with pytest.raises(RuntimeError, match=r"SessionPool is not active."):
        await session_pool.get_session()
    with pytest.raises(RuntimeError, match=r"SessionPool is not active."):
        await session_pool.get_session_by_id(session.id)
    await session_pool.reset_store()
    with pytest.raises(RuntimeError, match=r"SessionPool is already active."):
        async with session_pool, session_pool:
            pass
    async with session_pool:
        assert session_pool.active is True


# Beyond Crawlee's own cases: what the service adds.


async def test_get_state_is_crawlees_model_of_the_service_pool(remote_pool: RemoteSessionPool) -> None:
    state = remote_pool.get_state(as_dict=False)
    assert state.session_count == SIZE and len(state.sessions) == SIZE
    as_dict = remote_pool.get_state(as_dict=True)
    assert as_dict["max_pool_size"] == SIZE


async def test_marks_reach_the_service_in_order_and_are_flushed_on_exit(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1) as sp:
        session = await sp.get_session()
        for _ in range(3):
            session.mark_bad()  # returns at once; sent in the background, in this order
        session.mark_good()
        sid = session.id
    with SessionPoolClient(server.url) as c:
        remote = c.get_session(pool_name, sid)
    # bad, bad, bad blocks at 3 and retires: the mark_good after it changes nothing. Out of order it would not.
    assert remote.usage_count == 3 and remote.error_score == 3 and remote.retired_reason == "blocked"


async def test_a_lease_ends_with_the_report(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1, lease_secs=60) as sp:
        session = await sp.get_session()
        assert (await sp.get_status()).leased_session_count == 1
        session.mark_good()
        await sp.flush()
        assert (await sp.get_status()).leased_session_count == 0
        again = await sp.get_session()
        assert again.id == session.id and again.usage_count == 1


async def test_explicit_arguments_configure_the_pool_and_omitted_ones_leave_it(server: Server, pool_name: str) -> None:
    from datetime import timedelta
    with SessionPoolClient(server.url) as c:
        c.put_pool(pool_name, {"max_pool_size": 17, "session": {"max_usage_count": 7}})
    async with RemoteSessionPool(url=server.url, pool=pool_name) as sp:  # Crawlee's defaults are not pushed
        status = await sp.get_status()
        assert status.config.max_pool_size == 17 and status.config.session.max_usage_count == 7
        assert status.session_count == 0  # and nothing is filled
    async with RemoteSessionPool(url=server.url, pool=pool_name, fill_on_start=False,
                                 create_session_settings={"max_age": timedelta(seconds=90)}) as sp:
        status = await sp.get_status()
        assert status.config.max_pool_size == 17 and status.config.session.max_usage_count == 7
        assert status.config.session.max_age_secs == 90


async def test_retire_and_blocked_status_codes_retire_for_everyone(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=2) as sp:
        first = await sp.get_session()
        second = await sp.get_session()
        assert first.id != second.id  # both leased
        assert first.is_blocked_status_code(status_code=403)
        first.retire()
        second.retire()
        await sp.flush()
        with SessionPoolClient(server.url) as c:
            assert c.get_session(pool_name, first.id).retired_reason == "blocked_status_code"
            assert c.get_session(pool_name, second.id).retired_reason == "retired"
        assert sp.retired_session_count == 2


async def test_reset_store_keeps_the_shared_pool(remote_pool: RemoteSessionPool) -> None:
    await remote_pool.reset_store()
    assert remote_pool.session_count == SIZE


async def test_bad_arguments_are_named(server: Server) -> None:
    from session_pool_client import InvalidArgument
    with pytest.raises(InvalidArgument, match="'my shop'"):
        RemoteSessionPool(url=server.url, pool="my shop")
    with pytest.raises(InvalidArgument, match="not an http"):
        RemoteSessionPool(url="localhost:8080")
    with pytest.raises(InvalidArgument, match="lease_secs"):
        RemoteSessionPool(url=server.url, lease_secs=0)


async def test_user_data_changes_reach_the_service(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1) as sp:
        session = await sp.get_session()
        session.user_data["login"] = "alice"
        session.mark_good()
        await sp.flush()
        again = await sp.get_session()
        assert again.user_data == {"login": "alice"}
        del again.user_data["login"]
        again.user_data["plan"] = "pro"
        again.mark_good()
    with SessionPoolClient(server.url) as c:
        assert c.get_session(pool_name, session.id).user_data == {"plan": "pro"}


# Reports: at once, in order, never blocking; what is never reported is released.


async def wait_for_service(check, timeout: float = 3.0):
    """Poll the service (through `check`, a sync callable) while the event loop keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def test_a_blocked_retire_reaches_the_service_at_once_after_earlier_reports(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=2) as sp:
        session = await sp.get_session()
        session.mark_bad()
        assert session.is_blocked_status_code(status_code=403)  # as the crawler's blocked-status handling does
        session.retire()
        with SessionPoolClient(server.url) as c:

            def retired() -> None:
                remote = c.get_session(pool_name, session.id)
                assert remote.retired_reason == "blocked_status_code", remote
                assert remote.usage_count == 1 and remote.leased_until is None  # the mark_bad came first

            await wait_for_service(retired)  # while the pool is active: not held until flush or exit


async def test_leases_never_reported_are_released_on_exit(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=3, lease_secs=600) as sp:
        reported, forgotten, blocked = await sp.get_session(), await sp.get_session(), await sp.get_session()
        reported.mark_good()
        # The crawler checked a status that blocks the session, then gave the request up without retiring it.
        assert blocked.is_blocked_status_code(status_code=429)
        assert (await sp.get_status()).leased_session_count >= 2
    with SessionPoolClient(server.url) as c:
        assert c.get_pool(pool_name).leased_session_count == 0, "a lease outlived the pool"
        after = c.get_session(pool_name, forgotten.id)
        assert after.leased_until is None and after.usage_count == 0 and after.is_usable  # a release is not a use
        assert c.get_session(pool_name, reported.id).usage_count == 1
        assert c.get_session(pool_name, blocked.id).retired_reason == "blocked_status_code"
    assert sp.report_errors == []


async def test_exit_releases_a_live_lease_whatever_the_local_clock_says(server: Server, pool_name: str) -> None:
    import dataclasses
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1, lease_secs=600) as sp:
        forgotten = await sp.get_session()
        # As a local clock far ahead of the service's would see it: the lease long over.
        forgotten._lease = dataclasses.replace(forgotten._lease, expires_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    with SessionPoolClient(server.url) as c:
        assert c.get_session(pool_name, forgotten.id).leased_until is None, "a live lease outlived the pool"
    assert sp.report_errors == []


async def test_a_blocked_session_whose_lease_ran_out_is_still_reported_on_exit(server: Server, pool_name: str) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1, lease_secs=0.3) as sp:
        blocked = await sp.get_session()
        assert blocked.is_blocked_status_code(status_code=403)  # then the request is given up, not retired
        await asyncio.sleep(0.6)  # the lease runs out before the crawler exits
    with SessionPoolClient(server.url) as c:
        assert c.get_session(pool_name, blocked.id).retired_reason == "blocked_status_code"
    assert sp.report_errors == []


async def test_a_report_handed_over_from_a_thread_during_exit_arrives(server: Server, pool_name: str) -> None:
    import threading
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=2, lease_secs=600) as sp:
        marked, forgotten = await sp.get_session(), await sp.get_session()
        release = sp._release_unreported

        async def late_mark_then_release() -> None:
            # A thread marks after exit's first flush: the report is handed to the loop while exit goes on.
            thread = threading.Thread(target=marked.mark_good)
            thread.start()
            thread.join()
            await release()

        sp._release_unreported = late_mark_then_release  # type: ignore[method-assign]
    with SessionPoolClient(server.url) as c:
        after = c.get_session(pool_name, marked.id)
        assert after.usage_count == 1 and after.leased_until is None, "a report handed over during exit was lost"
        assert c.get_session(pool_name, forgotten.id).leased_until is None
    assert sp.report_errors == []
    with pytest.raises(RuntimeError, match="not active"):
        await asyncio.to_thread(marked.mark_bad)  # after exit: refused, loudly


async def test_marks_never_block_the_event_loop(tmp_path) -> None:
    srv = Server(tmp_path / "frozen").start()
    try:
        async with RemoteSessionPool(url=srv.url, pool="shop", max_pool_size=2) as sp:
            first, second = await sp.get_session(), await sp.get_session()
            srv.proc.send_signal(signal.SIGSTOP)  # the service takes the request and does not answer
            try:
                started = time.monotonic()
                first.mark_bad()
                await asyncio.to_thread(second.mark_good)  # from a thread, as sync code run off the loop would
                assert time.monotonic() - started < 0.2
                ticks = 0
                while time.monotonic() - started < 1.0:  # the loop runs on while the reports are in flight
                    await asyncio.sleep(0.01)
                    ticks += 1
                assert ticks >= 50 and len(sp._pending) == 2
            finally:
                srv.proc.send_signal(signal.SIGCONT)
            await sp.flush()
            assert sp.report_errors == []
        with SessionPoolClient(srv.url) as c:
            assert c.get_session("shop", first.id).error_score == 1
            assert c.get_session("shop", second.id).usage_count == 1
    finally:
        srv.stop()


async def test_crawlees_sync_api_holds_the_loop_two_seconds_at_most(tmp_path) -> None:
    from session_pool_client import ServiceUnavailable
    srv = Server(tmp_path / "frozen").start()
    try:
        async with RemoteSessionPool(url=srv.url, pool="shop", max_pool_size=1) as sp:
            assert sp.session_count == 1
            srv.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable):
                    sp.session_count  # noqa: B018 - a blocking call on the event loop
                assert time.monotonic() - started < 3, "a synchronous call held the event loop"
                started = time.monotonic()
                with pytest.raises(ServiceUnavailable):
                    sp.add_session(Session(id="late"))
                assert time.monotonic() - started < 3
            finally:
                srv.proc.send_signal(signal.SIGCONT)
    finally:
        srv.stop()


async def test_cookies_the_site_deletes_leave_the_service_jar(server: Server, pool_name: str) -> None:
    page = "http://shop.test/account"
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1) as sp:
        session = await sp.get_session()
        session.cookies.extract_cookies_from_headers(page, ["a=1; Path=/", "b=2; Path=/", "c=3; Path=/", "d=4; Path=/"])
        session.mark_good()
        await sp.flush()
        again = await sp.get_session()
        assert again.cookies.get_cookie_string(page) == "a=1; b=2; c=3; d=4"
        again.cookies.extract_cookies_from_headers(page, [
            "a=; Max-Age=0; Path=/",                            # deleted the usual way
            "b=gone; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/",  # or with a date in the past
        ])
        again.cookies.jar.clear("shop.test", "/", "c")          # or dropped from the jar by the crawler's code
        again.mark_good()
        await sp.flush()
        with SessionPoolClient(server.url) as c:
            assert c.cookies_for_url(pool_name, again.id, page).cookie_header == "d=4"
        third = await sp.get_session()
        assert third.cookies.get_cookie_string(page) == "d=4"
        assert [c["name"] for c in third.cookies.get_cookies_as_dicts()] == ["d"]
        third.mark_good()
        await sp.flush()
        with SessionPoolClient(server.url) as c:  # nothing deleted comes back
            assert c.cookies_for_url(pool_name, third.id, page).cookie_header == "d=4"
        assert sp.report_errors == []


async def test_add_session_leaves_the_operators_pool_size(tmp_path) -> None:
    srv = Server(tmp_path / "operator", "--max-pool-size", "7").start()
    try:
        async with RemoteSessionPool(url=srv.url, pool="new-pool") as sp:
            sp.add_session(Session(id="mine"))
        async with RemoteSessionPool(url=srv.url, pool="sized", max_pool_size=4, fill_on_start=False) as sp:
            sp.add_session(Session(id="mine"))
        with SessionPoolClient(srv.url) as c:
            assert c.get_pool("new-pool").config.max_pool_size == 7  # the server's default, not Crawlee's 1000
            assert c.get_pool("sized").config.max_pool_size == 4
    finally:
        srv.stop()


async def test_a_failed_report_is_kept_with_its_session_and_logged(server: Server, pool_name: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1) as sp:
        session = await sp.get_session()
        with SessionPoolClient(server.url) as c:
            c.delete_session(pool_name, session.id)
        with caplog.at_level(logging.WARNING, logger="session_pool_client.crawlee"):
            session.mark_good()
            await sp.flush()
        assert sp.report_error_count == 1
        [error] = sp.report_errors
        assert (error.session_id, error.kind, type(error.error).__name__) == (session.id, "mark_good", "SessionNotFound")
        assert session.id in caplog.text and "did not reach the service" in caplog.text


async def test_a_report_the_service_refuses_for_its_cookies_goes_again_without_them(
    server: Server, pool_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from session_pool_client import crawlee as integration
    monkeypatch.setattr(integration, "_storable", lambda cookie: True)  # let a cookie the service refuses through
    async with RemoteSessionPool(url=server.url, pool=pool_name, max_pool_size=1) as sp:
        session = await sp.get_session()
        session.cookies.set("seen_?", "1", domain="shop.test")
        session.mark_bad()
        await sp.flush()
        assert sp.report_errors == []
    with SessionPoolClient(server.url) as c:
        remote = c.get_session(pool_name, session.id)
    assert remote.error_score == 1 and remote.cookies == [] and remote.leased_until is None
