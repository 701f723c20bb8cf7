"""Our port of the cases of Crawlee for Python's tests/unit/sessions/test_session_pool.py (1.11), with
`RemoteSessionPool` in place of `SessionPool`, each pool a fresh one in the real service.

Left out: `test_session_pool_persist` and `test_session_pool_persist_and_restore`, which test the
persistence of the pool's state into Crawlee's key-value store; here the service keeps and persists the
pool, so there is no key-value-store state to write or restore (`persistence_enabled` is accepted and
ignored, and `reset_store()` leaves the shared pool alone: see the last test)."""

from __future__ import annotations

import logging
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
