"""Opens the back end that ``[store]`` names."""

from __future__ import annotations

from sidecar.config import StoreConfig, read_secret
from sidecar.store.base import Store
from sidecar.store.postgres import PostgresStore
from sidecar.store.sqlite import SqliteStore


def open_store(config: StoreConfig) -> Store:
    """The configured store; it connects on first use (``StoreUnavailable`` if it cannot)."""
    if config.backend == "sqlite":
        return SqliteStore(config.sqlite_path, busy_timeout_seconds=config.connect_timeout_seconds)
    password = (
        read_secret(config.postgresql_password_file, "store.postgresql_password_file")
        if config.postgresql_password_file is not None
        else None
    )
    assert config.postgresql_dsn is not None  # the config validator demands it
    return PostgresStore(
        config.postgresql_dsn,
        password=password,
        pool_size=config.pool_size,
        connect_timeout_seconds=config.connect_timeout_seconds,
    )
