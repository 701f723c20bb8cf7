from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import Server  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service for the tests that do not restart it; retired sessions stay readable for an hour."""
    srv = Server(tmp_path_factory.mktemp("service"), "--retired-retention-secs", "3600").start()
    yield srv
    assert srv.stop() == 0, "the service did not exit 0 on SIGTERM"


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("keyed"), "--api-key", "right-key").start()
    yield srv
    srv.stop()


@pytest.fixture
def pool_name() -> str:
    """A pool of its own for each test."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Nothing is skipped here: a test that cannot run (a missing package, a missing binary) fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow: {report.longrepr}"
