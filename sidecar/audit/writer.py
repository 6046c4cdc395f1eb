"""The chain writer: seals records in order, makes them durable, spools what the store refuses.

One writer per process and chain; appends are serialised (a chain is a sequence). Rules:

* ``append(entry, refusal=...)`` is for intents: it returns only once the record is committed to
  the store. If the store cannot take it, the intent *and* the refusal outcome go to the spool
  (so an intent that did commit after all is neither lost nor duplicated: replay skips a record
  whose identical row is present) and ``AuditUnavailable`` is raised: the work must not happen.
* ``append(entry)`` without a refusal is for outcomes: committed to the store, or, if the store
  cannot take it (or older records are still spooled), appended to the spool with ``fsync``.
* Spooled records are replayed into the store in order, by a background task and before the next
  intent; the spool is emptied only after the store committed them all.
* If the spool itself cannot be written the writer stops accepting records (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from sidecar.audit import payloads
from sidecar.audit.checkpoints import CHECKPOINT, CheckpointSigner, write_checkpoint
from sidecar.audit.records import GENESIS, Entry, Record, seal_record
from sidecar.audit.schema import INSERT_RECORD
from sidecar.audit.spool import Spool, SpoolError, leftovers, read
from sidecar.store import Store, StoreError, StoreUnavailable
from sidecar.store.base import now_micros

log = logging.getLogger(__name__)


def _refused(exc: Exception) -> None:
    """A write the store did not take: unavailable, or refused (a renamed or missing table)."""
    if not isinstance(exc, StoreUnavailable):
        log.error("audit.store_refused_write", extra={"error": type(exc).__name__})


class AuditUnavailable(Exception):
    """The record could not be made durable: the audited work must not happen."""


class SpoolConflict(StoreError):
    """A spooled record's position holds a different record in the store."""


class AuditWriter:
    def __init__(
        self,
        store: Store,
        chain: str,
        keys: payloads.DataKeyRing,
        spool_dir: Path,
        signer: CheckpointSigner,
        *,
        clock: Callable[[], int] = now_micros,
        replay_interval: float = 1.0,
        checkpoint_interval: float | None = None,
    ) -> None:
        self.store = store
        self.chain = chain
        self._keys = keys
        self.spool = Spool(spool_dir, chain)
        self._signer = signer
        self._clock = clock
        self._replay_interval = replay_interval
        self._lock = asyncio.Lock()
        self._seq = 0
        self._prev = GENESIS
        self._broken: str | None = None
        self._checkpointed = -1
        self._checkpoint_interval = checkpoint_interval
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def position(self) -> int:
        """The position of the last record written (-1 before the first)."""
        return self._seq - 1

    # ------------------------------------------------------------------ life cycle
    async def start(self, first: Entry) -> Record:
        """Replay what earlier processes left in the spool directory, then begin the chain."""
        self.spool.open()
        for path in leftovers(self.spool.directory, self.spool.path):
            await self._replay_records(read(path))
            path.unlink()
            log.info("audit.spool_replayed", extra={"file": path.name})
        record = await self.append(first, refusal=None, durable=True)
        self._tasks.append(asyncio.create_task(self._replay_loop()))
        if self._checkpoint_interval is not None:
            self._tasks.append(asyncio.create_task(self._checkpoint_loop()))
        return record

    async def close(self) -> None:
        """Stop the replayer, drain the spool if the store is back, seal the chain."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        try:
            await self.checkpoint()
        except Exception as exc:
            log.error("audit.final_checkpoint_failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ appending
    async def append(
        self, entry: Entry, *, refusal: Entry | None = None, durable: bool = False
    ) -> Record:
        """Seal and record ``entry``; see the module docstring for ``refusal`` and ``durable``."""
        must_commit = durable or refusal is not None
        async with self._lock:
            if self._broken is not None:
                raise AuditUnavailable(self._broken)
            if must_commit and self.spool.pending:
                with contextlib.suppress(Exception):  # else: spooled with its refusal
                    await self._drain()
            record = await self._seal(entry)
            if must_commit and not self.spool.pending:
                try:
                    await self._insert(record)
                    return self._advance(record)
                except Exception as exc:
                    _refused(exc)
            elif not must_commit:
                if not self.spool.pending:
                    try:
                        await self._insert(record)
                        return self._advance(record)
                    except Exception as exc:
                        _refused(exc)
                self._spool(record)
                return record
            # An intent the store did not take: spool it and its refusal, then refuse the work.
            self._spool(record)
            if refusal is not None:
                self._spool(await self._seal(refusal))
            raise AuditUnavailable("audit: the store cannot take the record")

    async def _seal(self, entry: Entry) -> Record:
        try:
            key = await self._keys.current()
        except Exception:
            raise AuditUnavailable("audit: no data key (the store cannot save one)") from None
        payload = payloads.encrypt(key.key, entry.plaintext or b"", entry.record_id.encode())
        return seal_record(
            chain=self.chain,
            seq=self._seq,
            at=self._clock(),
            entry=entry,
            data_key=key.key_id,
            payload=payload,
            prev_hash=self._prev,
        )

    def _advance(self, record: Record) -> Record:
        self._seq = record.seq + 1
        self._prev = record.hash
        return record

    def _spool(self, record: Record) -> None:
        try:
            self.spool.append(record)
        except SpoolError as exc:
            self._broken = str(exc)
            log.error("audit.spool_failed", extra={"chain": self.chain})
            raise AuditUnavailable(str(exc)) from None
        self._advance(record)
        log.warning("audit.spooled", extra={"seq": record.seq, "pending": self.spool.pending})

    async def _insert(self, record: Record) -> None:
        async with self.store.transaction() as tx:
            await tx.execute(INSERT_RECORD, record.as_row())

    # ------------------------------------------------------------------ replay
    async def replay(self) -> int:
        """Move spooled records into the store; how many were moved (StoreError if it cannot)."""
        async with self._lock:
            return await self._drain()

    async def _drain(self) -> int:
        if not self.spool.pending:
            return 0
        records = self.spool.records()
        await self._replay_records(records)
        self.spool.clear()
        log.info("audit.spool_replayed", extra={"records": len(records)})
        return len(records)

    async def _replay_records(self, records: list[Record]) -> None:
        async with self.store.transaction() as tx:
            for record in records:
                inserted = await tx.execute(
                    INSERT_RECORD + " ON CONFLICT (chain, seq) DO NOTHING", record.as_row()
                )
                if inserted == 0:
                    row = await tx.fetch_one(
                        "SELECT hash FROM audit_records WHERE chain = :chain AND seq = :seq",
                        {"chain": record.chain, "seq": record.seq},
                    )
                    if row is None or bytes(row["hash"]) != record.hash:
                        raise SpoolConflict(
                            f"audit: position {record.seq} of chain {record.chain} holds "
                            "another record; the spool is kept"
                        )

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self._replay_interval)
            if self.spool.pending:
                try:
                    await self.replay()
                except Exception as exc:
                    log.warning("audit.replay_failed", extra={"error": type(exc).__name__})

    async def _checkpoint_loop(self) -> None:
        assert self._checkpoint_interval is not None
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception as exc:
                log.warning("audit.checkpoint_failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ checkpoints
    async def checkpoint(self) -> bool:
        """Sign the chain's current position (if it moved); False if the store cannot take it."""
        async with self._lock:
            if self._seq == 0 or self._checkpointed == self._seq - 1:
                return False
            await self._drain()
            async with self.store.transaction() as tx:
                await write_checkpoint(
                    tx,
                    self._signer,
                    chain=self.chain,
                    kind=CHECKPOINT,
                    position=self._seq - 1,
                    hash_=self._prev,
                    at=self._clock(),
                )
            self._checkpointed = self._seq - 1
            return True
