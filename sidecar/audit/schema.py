"""The audit trail's tables (component ``audit``)."""

from __future__ import annotations

from sidecar.store import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="audit",
        version=1,
        statements=(
            "CREATE TABLE audit_records ("
            " chain TEXT NOT NULL, seq BIGINT NOT NULL, record_id TEXT NOT NULL,"
            " kind TEXT NOT NULL, at BIGINT NOT NULL, subject TEXT NOT NULL,"
            " data_key TEXT NOT NULL, content {blob} NOT NULL, payload {blob} NOT NULL,"
            " prev_hash {blob} NOT NULL, hash {blob} NOT NULL,"
            " PRIMARY KEY (chain, seq))",
            "CREATE INDEX audit_records_subject ON audit_records (subject)",
            "CREATE INDEX audit_records_at ON audit_records (at)",
            "CREATE TABLE audit_data_keys ("
            " key_id TEXT NOT NULL PRIMARY KEY, wrapped {blob} NOT NULL,"
            " chain TEXT NOT NULL, created_at BIGINT NOT NULL)",
            "CREATE TABLE audit_checkpoints ("
            " chain TEXT NOT NULL, number BIGINT NOT NULL, kind TEXT NOT NULL,"
            " position BIGINT NOT NULL, at BIGINT NOT NULL, content {blob} NOT NULL,"
            " signature {blob} NOT NULL, PRIMARY KEY (chain, number))",
        ),
    ),
    Migration(
        component="audit",
        version=2,
        statements=(
            # The chain registry (sidecar/audit/registry.py): per instance, signed and linked.
            "CREATE TABLE audit_registry ("
            " instance TEXT NOT NULL, number BIGINT NOT NULL, event TEXT NOT NULL,"
            " chain TEXT NOT NULL, at BIGINT NOT NULL, content {blob} NOT NULL,"
            " signature {blob} NOT NULL, PRIMARY KEY (instance, number))",
        ),
    ),
)

INSERT_RECORD = (
    "INSERT INTO audit_records"
    " (chain, seq, record_id, kind, at, subject, data_key, content, payload, prev_hash, hash)"
    " VALUES (:chain, :seq, :record_id, :kind, :at, :subject, :data_key, :content, :payload,"
    " :prev_hash, :hash)"
)

_COLUMNS = (
    "chain", "seq", "record_id", "kind", "at", "subject", "data_key", "content", "payload",
    "prev_hash", "hash",
)  # fmt: skip


def insert_many(rows: list[dict[str, object]]) -> tuple[str, dict[str, object]]:
    """One multi-row INSERT for ``rows`` (one round trip to the store instead of one per row)."""
    values, params = [], {}
    for n, row in enumerate(rows):
        values.append("(" + ", ".join(f":{column}_{n}" for column in _COLUMNS) + ")")
        params.update({f"{column}_{n}": row[column] for column in _COLUMNS})
    columns = ", ".join(_COLUMNS)  # constants: only placeholders vary, never values
    sql = f"INSERT INTO audit_records ({columns}) VALUES {', '.join(values)}"  # noqa: S608
    return sql, params
