"""Shared fixtures. Helpers live in tests/dbfixtures.py so other suites reuse them.

PostgreSQL: FARM_TEST_PG_URL if set, else a server on 127.0.0.1:5432, else a
private cluster started for the session. When none can be had the PostgreSQL
tests skip, or fail where CI=1 or FARM_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.store import Store
from tests.dbfixtures import (
    DEFAULT_PG_URL,
    PostgresUnavailable,
    PrivatePostgres,
    create_database,
    drop_database,
    pg_error,
)

# A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and
# so would every farmctl it starts — Python then installs no KeyboardInterrupt
# handler, rightly for a background job — and the tests that Ctrl-C farmctl would
# see it ignored. A handler here makes the children start with SIGINT at default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_exec_in_the_test_process():
    """A test that reached an exec (`farmctl worker` execs the worker program) would
    replace the test run itself, which then exits 0 with every later test unrun:
    that happened, and CI passed on a sixth of the suite. Fail the test instead."""
    def refused(*args, **kwargs):
        raise AssertionError(f"exec in the test process: {args[:2]!r}; run it as a "
                             "subprocess")
    # A patch of its own, not the test's `monkeypatch`: that one, set up first by
    # this autouse fixture, would be undone last and put back what a test's own
    # fixtures had already restored.
    patch = pytest.MonkeyPatch()
    for name in ("execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
                 "execlpe"):
        patch.setattr(os, name, refused)
    yield
    patch.undo()


def services_required() -> bool:
    return os.environ.get("CI") == "1" or os.environ.get("FARM_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (required: CI=1 or FARM_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    explicit = os.environ.get("FARM_TEST_PG_URL")
    if explicit:
        error = pg_error(explicit)
        if error:
            unavailable(f"FARM_TEST_PG_URL cannot be reached: {error}")
        yield explicit
        return
    if pg_error(DEFAULT_PG_URL) is None:
        yield DEFAULT_PG_URL
        return
    server = PrivatePostgres()
    try:
        url = server.start()
    except PostgresUnavailable as exc:
        unavailable(f"no PostgreSQL at {DEFAULT_PG_URL} and none could be started: {exc}")
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def pg_db_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty database, dropped afterwards."""
    url = create_database(pg_url)
    try:
        yield url
    finally:
        drop_database(pg_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database of each kind (no schema yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'farm.db'}"
    return request.getfixturevalue("pg_db_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url, upgrade=True) as opened:
        yield opened


# Redis fixtures: added here by the lead (helpers next to the PostgreSQL ones).


def _nvidia_gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


ENGINES = Path(__file__).parent / "engines"


# First, so that `-m engines` (pytest's own hook, which deselects) sees the marks added here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/engines/ is marked `engines`; `gpu` tests run only where
    NVML sees an NVIDIA GPU (never in CI)."""
    for item in items:
        if item.path.is_relative_to(ENGINES):
            item.add_marker(pytest.mark.engines)
    # The mark, not item.keywords: those hold the folders' names too (tests/unit/workers/gpu/).
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items and _nvidia_gpu_count() == 0:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (NVML found none)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def report_store(tmp_path_factory):
    """(SQLite URL, sweep name) of a store filled by the farm's own simulated runs
    (tests/reportdata.py: 40 runs, ~20 s, once per session). Read it; don't write."""
    from tests.reportdata import fill_store

    url = f"sqlite:///{tmp_path_factory.mktemp('report-store') / 'farm.db'}"
    with Store.open(url, upgrade=True) as store:
        name = fill_store(store)
    return url, name
