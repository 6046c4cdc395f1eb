"""The ``store`` fixture: every store test runs on SQLite and on PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, database ``test``), or the libpq conninfo
in ``YIBAO_TEST_POSTGRES``. Each test gets a fresh schema, dropped afterwards. If the server is
down the PostgreSQL half of the tests errors: it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from sidecar.config import StoreConfig
from sidecar.store import Store, open_store

POSTGRES = os.environ.get(
    "YIBAO_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh, empty schema in the test database; its conninfo selects it.

    The conninfo also names the schema as ``application_name``, so a test can find (and cut) its
    own connections without touching anyone else's.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test ({POSTGRES}): {exc}", pytrace=False)
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES} options=-csearch_path={schema} application_name={schema}"
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
