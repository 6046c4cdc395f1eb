"""The ``store`` fixture: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is the server named by the libpq conninfo in ``YIBAO_TEST_POSTGRES`` (default: the one
on 127.0.0.1:5432, trust auth, database ``test``) when it answers; when it does not (a fresh
machine, nothing running), the first test that needs PostgreSQL starts a throw-away server
(tests/postgres_server.py) that the session stops at its end. The summary line of the run says
which was used. PostgreSQL tests never skip: if neither can be had, they fail naming both.
Each test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from sidecar.config import StoreConfig
from sidecar.store import Store, open_store
from tests import postgres_server

CONFIGURED = os.environ.get(
    "YIBAO_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

_session: dict[str, object] = {}  # "dsn", "server" (a throw-away one) or "error", "why"


def postgres_dsn() -> str:
    """The conninfo of this session's PostgreSQL (superuser ``postgres``, database ``test``)."""
    if "dsn" not in _session and "error" not in _session:
        _resolve()
    if "error" in _session:
        pytest.fail(str(_session["error"]), pytrace=False)
    dsn = _session["dsn"]
    assert isinstance(dsn, str)
    return dsn


def _resolve() -> None:
    try:
        psycopg.connect(CONFIGURED, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        _session["dsn"] = CONFIGURED
        return
    try:
        server = postgres_server.start()
    except postgres_server.ServerUnavailable as exc:
        _session["error"] = (
            f"PostgreSQL is required for this test: the configured one ({CONFIGURED}) does not "
            f"answer ({why}) and a throw-away one could not be started: {exc}"
        )
        return
    atexit.register(server.stop)  # also when the session dies before pytest_sessionfinish
    _session.update(dsn=server.dsn, server=server, why=why)


def pytest_sessionfinish() -> None:
    server = _session.pop("server", None)
    if isinstance(server, postgres_server.ThrowAwayServer):
        server.stop()
        atexit.unregister(server.stop)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "why" in _session:
        terminalreporter.write_line(
            f"PostgreSQL: a throw-away server ({_session['dsn']}); the configured one "
            f"({CONFIGURED}) did not answer: {_session['why']}"
        )
    elif "dsn" in _session:
        terminalreporter.write_line(f"PostgreSQL: the configured server ({CONFIGURED})")


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh, empty schema in the test database; its conninfo selects it.

    The conninfo also names the schema as ``application_name``, so a test can find (and cut) its
    own connections without touching anyone else's.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = postgres_dsn()
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test ({dsn}): {exc}", pytrace=False)
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{dsn} options=-csearch_path={schema} application_name={schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """A StoreConfig for one back end (for sidecars run as subprocesses, too)."""
    if request.param == "sqlite":
        return StoreConfig(backend="sqlite", sqlite_path=tmp_path / "store" / "sidecar.db")
    dsn = request.getfixturevalue("postgres_schema")
    return StoreConfig(backend="postgresql", postgresql_dsn=dsn, pool_size=4)


@pytest.fixture
async def store(store_config: StoreConfig) -> AsyncIterator[Store]:
    opened = open_store(store_config)
    try:
        yield opened
    finally:
        await opened.close()
