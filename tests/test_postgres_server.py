"""The throw-away PostgreSQL that `make test` starts when none is configured: usable, then gone."""

from __future__ import annotations

import psycopg
import pytest

from tests import postgres_server


@pytest.mark.slow
def test_a_throw_away_server_serves_the_test_database_and_leaves_nothing_behind() -> None:
    server = postgres_server.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT current_database(), current_user, rolsuper, current_setting('TimeZone') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            conn.execute("CREATE SCHEMA probe; CREATE ROLE probe_role LOGIN")
        assert row == ("test", "postgres", True, "UTC")  # what the store tests expect of one
    finally:
        server.stop()
    assert not server.directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn, connect_timeout=3).close()
