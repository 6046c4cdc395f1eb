"""The chain writer: seals records in order, commits them in groups, spools what the store refuses.

One writer per process and chain; a chain is a sequence, so records are sealed one at a time
(position, previous hash) and queued in that order. Commits take the whole queue in one store
transaction (group commit: one ``fsync`` for everything queued meanwhile). Rules:

* ``append(entry, durable=True, refusal=...)`` is for transaction intents: it returns only once
  the record — and everything queued before it — is committed to the store. If the store cannot
  take them, they go to the spool together with the refusal outcome (so an intent that did
  commit after all is neither lost nor duplicated: replay skips a row already present with the
  same hash) and ``AuditUnavailable`` is raised: the platform must not be called.
* ``append(entry)`` queues the record and wakes the background committer (RPC intents and every
  outcome): it is committed with the next intent or by the committer within moments, or, if the
  store cannot take it (or older records are still spooled), appended to the spool and ``fsync``ed.
* Spooled records are replayed into the store in order, by a background task and before the next
  commit; the spool is emptied only after the store committed them all.
* If the spool itself cannot be written the writer stops accepting records (fail closed).
* A record queued but not yet committed is lost if the *process* dies (not if the store does):
  the chain then ends without its final checkpoint, which ``yibao-audit verify`` shows.
* With ``journal=True`` every record is first written to the local journal (journal.py) and a
  durable append returns once its line is ``fdatasync``ed there — one sync shared by every record
  sealed meanwhile; the store gets journaled records in batches from the background committer.
  A journal that cannot be written refuses everything from then on (nothing reaches the
  platform); a store that cannot take them leaves them in the journal (and in memory, up to
  ``MAX_UNSHIPPED`` records, then appends are refused) until it can; what a dead process left in
  its journal is replayed at the next start like a spool.
* Checkpoints: every ``checkpoint_interval`` seconds and as soon as ``checkpoint_every`` records
  were committed since the last one (so a crash leaves few records unsigned); ``close`` writes
  the *final* checkpoint and the registry's ``close`` entry in one transaction. ``start`` writes
  the registry's ``open`` entry first; the chain's first record repeats what it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from sidecar.audit import payloads
from sidecar.audit.checkpoints import CHECKPOINT, FINAL, CheckpointSigner, write_checkpoint
from sidecar.audit.journal import Journal
from sidecar.audit.records import GENESIS, Entry, Record, seal_problem, seal_record
from sidecar.audit.registry import instance_of, register_close, register_open
from sidecar.audit.schema import INSERT_RECORD, insert_many
from sidecar.audit.spool import Spool, SpoolError, leftovers, read
from sidecar.store import Store, StoreError, StoreUnavailable
from sidecar.store.base import now_micros

log = logging.getLogger(__name__)
_ROWS_PER_INSERT = 64  # 11 parameters each: far below SQLite's and PostgreSQL's limits
#: Journal mode: journaled records the store has not taken yet, kept in memory to ship; beyond
#: this many (minutes of a store outage at full load) appends are refused.
MAX_UNSHIPPED = 200_000


def _refused(exc: Exception) -> None:
    """A write the store did not take: unavailable, or refused (a renamed or missing table)."""
    if not isinstance(exc, StoreUnavailable):
        log.error("audit.store_refused_write", extra={"error": type(exc).__name__})


class AuditUnavailable(Exception):
    """The record could not be made durable: the audited work must not happen."""


class SpoolConflict(StoreError):
    """A spooled record's position holds a different record in the store, or it was changed."""


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
        checkpoint_every: int | None = None,
        commit_delay: float = 0.0,
        instance: str | None = None,
        journal: bool = False,
        journal_segment_bytes: int = 16 << 20,
    ) -> None:
        self.store = store
        self.chain = chain
        self.instance = instance or instance_of(chain)
        self._keys = keys
        self.spool = Spool(spool_dir, chain)
        self.journal = Journal(spool_dir, chain, journal_segment_bytes) if journal else None
        self._signer = signer
        self._clock = clock
        self._replay_interval = replay_interval
        self._checkpoint_interval = checkpoint_interval
        self._checkpoint_every = checkpoint_every
        self._checkpoint_due = asyncio.Event()
        self._commit_delay = commit_delay
        self._seal_lock = asyncio.Lock()  # chain order: one record sealed at a time
        self._commit_lock = asyncio.Lock()  # one store transaction (or spool write) at a time
        self._queue: list[Record] = []
        self._seq = 0
        self._prev = GENESIS
        self._stored = -1  # every position up to this one is committed to the store
        self._stored_hash = GENESIS
        self._broken: str | None = None
        self._checkpointed = -1
        self._kick = asyncio.Event()
        self._registered: dict[str, object] | None = None  # the registry's open entry
        self._closed = False
        self._held = 0  # journal mode: records the store refused at the last try
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def position(self) -> int:
        """The position of the last record sealed (-1 before the first)."""
        return self._seq - 1

    # ------------------------------------------------------------------ life cycle
    async def start(self, first: Entry) -> Record:
        """Replay what earlier processes left in the spool directory, then begin the chain."""
        try:
            self.spool.open()
            for path in leftovers(self.spool.directory, self.spool.path):
                records = read(path)
                if any(instance_of(record.chain) != self.instance for record in records):
                    log.warning("audit.spool_of_another_instance", extra={"file": path.name})
                    continue  # another replica's: its own process replays it
                await self._replay_records(records)
                path.unlink()
                log.info("audit.spool_replayed", extra={"file": path.name})
            if self.journal is not None:
                self.journal.open()
        except (SpoolError, SpoolConflict) as exc:
            raise AuditUnavailable(str(exc)) from None
        record = await self.append(await self._register(first), durable=True)
        self._tasks.append(asyncio.create_task(self._commit_loop()))
        self._tasks.append(asyncio.create_task(self._replay_loop()))
        if self._checkpoint_interval is not None or self._checkpoint_every is not None:
            self._tasks.append(asyncio.create_task(self._checkpoint_loop()))
        return record

    async def _register(self, first: Entry) -> Entry:
        """Sign the chain's start in the registry (once); the first record repeats it."""
        entry = self._registered
        if entry is None:
            try:
                async with self.store.transaction() as tx:
                    entry = await register_open(
                        tx, self._signer, instance=self.instance, chain=self.chain, at=self._clock()
                    )
            except Exception as exc:  # whatever stops it (store or HSM): nothing may be recorded
                _refused(exc)
                raise AuditUnavailable(
                    f"audit: the chain cannot be registered ({type(exc).__name__})"
                ) from None
            self._registered = entry
        fields = {
            **first.fields,
            "registry": {"instance": self.instance, "number": entry["number"]},
            "predecessor": entry["predecessor"],
        }
        return dataclasses.replace(first, fields=fields)

    async def close(self) -> None:
        """Stop the background tasks, commit what is queued, seal the chain: final checkpoint."""
        if self._closed:
            return
        self._closed = True
        async with self._commit_lock:  # so that no task is cancelled inside a transaction
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        try:
            if self.journal is not None:  # what it cannot take was refused: ship the rest
                with contextlib.suppress(SpoolError):
                    await self.journal.sync(self.position)
            await self.checkpoint(final=True)
        except Exception as exc:  # the spool (or journal) keeps what the store did not take
            log.error("audit.final_checkpoint_failed", extra={"error": type(exc).__name__})
        if self.journal is not None:
            await self.journal.close(self._stored)

    # ------------------------------------------------------------------ appending
    async def append(
        self, entry: Entry, *, refusal: Entry | None = None, durable: bool = False
    ) -> Record:
        """Seal and record ``entry``; see the module docstring for ``refusal`` and ``durable``."""
        if self._broken is not None:
            raise AuditUnavailable(self._broken)
        if self.journal is not None:
            return await self._append_journaled(entry, durable=durable or refusal is not None)
        async with self._seal_lock:
            record = await self._seal(entry)
            self._queue.append(record)
        if not durable and refusal is None:
            self._kick.set()
            return record
        async with self._commit_lock:
            if self._stored < record.seq:
                await self._commit()
            if self._stored >= record.seq:
                return record
            # The store did not take it (it is in the spool): record the refusal, refuse.
            if refusal is not None:
                async with self._seal_lock:
                    refused = await self._seal(refusal)
                self._spool([refused])
            raise AuditUnavailable("audit: the store cannot take the record")

    async def _append_journaled(self, entry: Entry, *, durable: bool) -> Record:
        """Journal mode: on the journal before a durable append returns; shipped later."""
        journal = self.journal
        assert journal is not None
        if journal.error is not None:
            self._broken = journal.error
            raise AuditUnavailable(journal.error)
        if len(self._queue) >= MAX_UNSHIPPED:
            raise AuditUnavailable(
                f"audit: the store has not taken the last {len(self._queue)} journaled records"
            )
        async with self._seal_lock:
            record = await self._seal(entry)
            self._queue.append(record)
            journal.add(record)
        self._kick.set()
        if durable:
            try:
                await journal.sync(record.seq)
            except SpoolError as exc:
                self._broken = str(exc)
                log.error("audit.journal_failed", extra={"chain": self.chain})
                raise AuditUnavailable(str(exc)) from None
        return record

    @property
    def unshipped(self) -> int:
        """Records on the local volume because the store refused them (spool or journal).

        In journal mode records are shipped a moment after they are journaled; they count here
        only once the store refused them, so the gauge (and its alert) mean the same in both.
        """
        return self.spool.pending if self.journal is None else self._held

    async def flush(self) -> None:
        """Commit (or spool) everything queued so far."""
        async with self._commit_lock:
            await self._commit()

    async def _seal(self, entry: Entry) -> Record:
        """Under the seal lock: the record at the next position, chained to the last one."""
        try:
            key = await self._keys.current()
        except Exception:  # no key saved, nothing can be recorded
            raise AuditUnavailable("audit: no data key (the store cannot save one)") from None
        payload = payloads.encrypt(key.key, entry.plaintext or b"", entry.record_id.encode())
        record = seal_record(
            chain=self.chain,
            seq=self._seq,
            at=self._clock(),
            entry=entry,
            data_key=key.key_id,
            payload=payload,
            prev_hash=self._prev,
        )
        self._seq = record.seq + 1
        self._prev = record.hash
        return record

    async def _commit(self) -> None:
        """Under the commit lock: the queue into the store, or into the spool."""
        if self.journal is not None:
            await self._ship()
            return
        async with self._seal_lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        if self.spool.pending:
            try:
                await self._drain()
            except Exception as exc:  # the store is still away: keep the order, spool
                _refused(exc)
                self._spool(batch)
                return
        try:
            await self._insert(batch)
        except Exception as exc:  # whatever stops the write: the spool keeps the records
            _refused(exc)
            self._spool(batch)
            return
        self._stored, self._stored_hash = batch[-1].seq, batch[-1].hash
        self._note_stored()

    async def _ship(self) -> None:
        """Under the commit lock, journal mode: journaled records into the store, in one batch.

        Only what is on the journal is shipped (a record the store holds is on the volume too);
        if the store cannot take them they stay queued, and in the journal, for the next try.
        """
        journal = self.journal
        assert journal is not None
        with contextlib.suppress(SpoolError):  # a broken journal: the next append refuses
            await journal.sync(self.position)  # outcomes join the running write, if any
        async with self._seal_lock:
            durable = journal.durable
            cut = 0
            while cut < len(self._queue) and self._queue[cut].seq <= durable:
                cut += 1
            batch, self._queue = self._queue[:cut], self._queue[cut:]
        if not batch:
            return
        try:
            await self._insert(batch)
        except Exception as exc:  # the journal keeps them: try again with the next ship
            _refused(exc)
            async with self._seal_lock:
                self._queue[:0] = batch
                self._held = len(self._queue)
            return
        self._held = 0
        self._stored, self._stored_hash = batch[-1].seq, batch[-1].hash
        journal.release(self._stored)
        self._note_stored()

    async def _insert(self, batch: list[Record]) -> None:
        async with self.store.transaction() as tx:
            for start in range(0, len(batch), _ROWS_PER_INSERT):
                chunk = batch[start : start + _ROWS_PER_INSERT]
                await tx.execute(*insert_many([record.as_row() for record in chunk]))

    def _note_stored(self) -> None:
        """Wake the checkpoint task once ``checkpoint_every`` records await a signature."""
        every = self._checkpoint_every
        if every is not None and self._stored - self._checkpointed >= every:
            self._checkpoint_due.set()

    def _spool(self, records: list[Record]) -> None:
        try:
            self.spool.append_all(records)
        except SpoolError as exc:
            self._broken = str(exc)
            log.error("audit.spool_failed", extra={"chain": self.chain})
            raise AuditUnavailable(str(exc)) from None
        log.warning("audit.spooled", extra={"records": len(records), "pending": self.spool.pending})

    async def _commit_loop(self) -> None:
        while True:
            await self._kick.wait()
            if self._commit_delay:  # let more records (or the next intent) join this commit
                await asyncio.sleep(self._commit_delay)
            self._kick.clear()
            try:
                await self.flush()
            except AuditUnavailable:
                pass  # logged; every later append refuses
            except Exception as exc:  # a bug: keep committing what comes next
                log.error("audit.commit_failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ replay
    async def replay(self) -> int:
        """Move spooled records into the store; how many were moved (StoreError if it cannot)."""
        async with self._commit_lock:
            return await self._drain()

    async def _drain(self) -> int:
        if not self.spool.pending:
            return 0
        records = self.spool.records()
        await self._replay_records(records)
        self.spool.clear()
        last = max(records, key=lambda r: r.seq)
        if last.chain == self.chain and last.seq > self._stored:
            self._stored, self._stored_hash = last.seq, last.hash
            self._note_stored()
        log.info("audit.spool_replayed", extra={"records": len(records)})
        return len(records)

    async def _replay_records(self, records: list[Record]) -> None:
        """Into the store, in order, once: each record as sealed and linked to its predecessor."""
        async with self.store.transaction() as tx:
            previous: Record | None = None
            for record in records:
                problem = seal_problem(record)
                if problem is None and record.seq == 0:
                    problem = None if record.prev_hash == GENESIS else "it does not link to GENESIS"
                elif problem is None:
                    if previous is not None and previous.chain == record.chain:
                        before = previous.hash if previous.seq == record.seq - 1 else None
                    else:
                        row = await tx.fetch_one(
                            "SELECT hash FROM audit_records WHERE chain = :chain AND seq = :seq",
                            {"chain": record.chain, "seq": record.seq - 1},
                        )
                        before = bytes(row["hash"]) if row is not None else None
                    if before != record.prev_hash:
                        problem = "it does not link to the record before it"
                if problem is not None:
                    raise SpoolConflict(
                        f"audit: record {record.seq} of chain {record.chain} in the local file "
                        f"is not replayed: {problem}; the file is kept"
                    )
                previous = record
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
                except Exception as exc:  # keep trying until the store is back
                    log.warning("audit.replay_failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ checkpoints
    async def _checkpoint_loop(self) -> None:
        while True:
            # Not asyncio.wait_for: on 3.11 it returns normally when cancelled just as the event
            # is set, and this task would then wait for the commit lock that ``close`` holds.
            with contextlib.suppress(TimeoutError):  # the interval passed, or enough records
                async with asyncio.timeout(self._checkpoint_interval):
                    await self._checkpoint_due.wait()
            if self._closed:  # ``close`` signs the final checkpoint itself
                return
            self._checkpoint_due.clear()
            try:
                await self.checkpoint()
            except Exception as exc:  # try again at the next interval
                log.warning("audit.checkpoint_failed", extra={"error": type(exc).__name__})

    async def checkpoint(self, *, final: bool = False) -> bool:
        """Commit what is queued, then sign the stored position (if it moved).

        ``final`` (the clean stop) signs even an unmoved position, as kind ``final``, and
        registers the chain's close in the same transaction. False when there is nothing new;
        StoreError if the store cannot take it (the records are then in the spool and the next
        checkpoint covers them).
        """
        async with self._commit_lock:
            await self._commit()
            await self._drain()
            if self._stored < 0 or (self._checkpointed == self._stored and not final):
                return False
            async with self.store.transaction() as tx:
                written = await write_checkpoint(
                    tx,
                    self._signer,
                    chain=self.chain,
                    kind=FINAL if final else CHECKPOINT,
                    position=self._stored,
                    hash_=self._stored_hash,
                    at=self._clock(),
                )
                if final:
                    await register_close(
                        tx, self._signer, instance=self.instance, final=written, at=self._clock()
                    )
            self._checkpointed = self._stored
            self._checkpoint_due.clear()  # what made it due (its own commit, too) is signed
            return True
