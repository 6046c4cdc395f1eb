"""Builds the audit trail from ``[audit]`` and an open HSM token (used by app.py and the CLI)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

from hsm.errors import HsmError
from hsm.token import HsmToken
from sidecar.audit.hsm_keys import AuditKeys, open_audit_keys
from sidecar.audit.payloads import DataKeyRing
from sidecar.audit.trail import AuditTrail
from sidecar.audit.writer import AuditWriter
from sidecar.config import AuditConfig, ConfigError
from sidecar.store import Store
from sidecar.store.base import now_micros


def new_chain_id(instance: str) -> str:
    """One chain per process start: ``<instance>/<UTC start time>-<random>``."""
    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{instance}/{started}-{secrets.token_hex(3)}"


def audit_keys(token: HsmToken) -> AuditKeys:
    try:
        return open_audit_keys(token)
    except HsmError as exc:
        hint = "yibao-hsm keygen --purpose audit, pseudonym and kek"
        raise ConfigError(f"audit: {exc} ({hint})") from None


def build_trail(
    config: AuditConfig,
    store: Store,
    keys: AuditKeys,
    *,
    instance: str | None = None,
    clock: Callable[[], int] = now_micros,
) -> AuditTrail:
    async def save_key(key_id: str, wrapped: bytes) -> None:
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_data_keys (key_id, wrapped, chain, created_at)"
                " VALUES (:key_id, :wrapped, :chain, :at)",
                {"key_id": key_id, "wrapped": wrapped, "chain": chain, "at": now_micros()},
            )

    chain = config.chain_id or new_chain_id(instance or config.instance)
    ring = DataKeyRing(keys.data_keys.new, save_key, config.key_rotation_seconds)
    writer = AuditWriter(
        store,
        chain,
        ring,
        config.spool_dir,
        keys.signer,
        replay_interval=config.replay_interval_seconds,
        checkpoint_interval=config.checkpoint_interval_seconds,
        checkpoint_every=config.checkpoint_every_records,
        commit_delay=config.commit_delay_seconds,
        clock=clock,
        instance=instance or config.instance,
        journal=config.durability == "journal",
        journal_segment_bytes=config.journal_segment_mib << 20,
    )
    return AuditTrail(writer, keys.pseudonyms, instance or config.instance)
