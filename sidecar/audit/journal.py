"""The local journal: every record on the pod's volume, ``fdatasync``ed in groups, before the store.

With ``[audit] durability = "journal"`` a transaction intent is durable once its line is on the
journal: the request waits for one ``fdatasync`` that it shares with every record sealed while the
previous one ran (group fsync: one write in flight at a time takes everything buffered meanwhile,
so there is no timed window to tune). The writer ships journaled records to the store in batches,
in the background. The journal is the spool's file format (one JSON line per record, blobs hex:
the same encrypted payloads, no plaintext) cut into segments ``<chain>.<n>.spool``, so whatever a
dead process leaves is replayed at the next start by the spool's one replay path. A segment is
deleted once the store holds its last record; a clean stop deletes them all.

Segments are written over zeros (made ahead, in the background, like PostgreSQL's WAL files): an
append that grows a file makes ``fdatasync`` write its size too, an overwrite does not, which
halves the sync on ext4. The zeros after the last line are a tail without a newline, which
``spool.read`` ignores like any torn write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from sidecar.audit.records import Record
from sidecar.audit.spool import SUFFIX, SpoolError, encode, file_name, make_directory


class Journal:
    """The journal segments of one chain, and the group ``fdatasync`` in front of them."""

    def __init__(self, directory: Path, chain: str, segment_bytes: int = 16 << 20) -> None:
        self.directory = directory
        self._stem = file_name(chain).removesuffix(SUFFIX)
        self._segment_bytes = segment_bytes
        self._buffer: list[bytes] = []
        self._buffered = -1  # the last position handed to ``add``
        self._durable = -1  # every position up to this one is on the volume, fdatasynced
        self._inflight: asyncio.Future[None] | None = None
        self._error: str | None = None
        self._fd = -1
        self._number = 0
        self._path = directory
        self._offset = 0  # where the next line goes in the active segment
        self._last_in_segment = -1
        self._sealed: list[tuple[Path, int]] = []  # full segments and their last position
        self._next: asyncio.Future[tuple[int, Path]] | None = None  # the segment made ahead

    @property
    def durable(self) -> int:
        """The last position that is on the volume (-1 before the first)."""
        return self._durable

    @property
    def error(self) -> str | None:
        """Why the journal stopped taking writes (None while it takes them)."""
        return self._error

    def segments(self) -> list[Path]:
        """The segment files this journal still holds, oldest first."""
        active = [self._path] if self._fd >= 0 else []
        return [path for path, _ in self._sealed] + active

    def open(self) -> None:
        """Create the directory and the first segment (SpoolError if the volume refuses)."""
        make_directory(self.directory)
        self._fd, self._path = self._new_segment(0)

    def _new_segment(self, number: int) -> tuple[int, Path]:
        """Create segment ``number`` full of zeros, durable with its name (directory fsynced)."""
        path = self.directory / f"{self._stem}.{number:08d}{SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                zeros = bytes(min(self._segment_bytes, 1 << 20))
                for _ in range(0, self._segment_bytes, len(zeros)):
                    os.write(fd, zeros)
                os.fsync(fd)
                directory = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            raise SpoolError(f"audit: cannot create the journal {path}: {exc.strerror}") from None
        return fd, path

    def add(self, record: Record) -> None:
        """Buffer a sealed record (in chain order); the next ``sync`` writes it.

        Nothing is written until someone syncs: a durable intent, or the writer before it ships
        (after ``commit_delay_seconds``), so outcomes share the next intent's ``fdatasync``.
        """
        self._buffer.append(encode(record))
        self._buffered = record.seq

    async def sync(self, seq: int) -> None:
        """Return once position ``seq`` is on the volume (SpoolError if it cannot be written)."""
        while self._durable < seq:
            if self._error is not None:
                raise SpoolError(self._error)
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._flush())
            await asyncio.shield(self._inflight)

    async def _flush(self) -> None:
        """Write everything buffered in one ``pwrite`` + ``fdatasync``; repeat while more came."""
        try:
            while self._buffer and self._error is None:
                data, last = b"".join(self._buffer), self._buffered
                self._buffer = []
                try:
                    if self._offset and self._offset + len(data) > self._segment_bytes:
                        await self._rotate()
                    await asyncio.to_thread(_write_at, self._fd, data, self._offset)
                except (OSError, SpoolError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                    self._error = f"audit: cannot write the journal {self._path}: {reason}"
                    if isinstance(exc, SpoolError):
                        self._error = str(exc)
                    return
                self._offset += len(data)
                self._last_in_segment = self._durable = last
                if self._next is None and self._offset > self._segment_bytes // 2:
                    self._next = asyncio.ensure_future(
                        asyncio.to_thread(self._new_segment, self._number + 1)
                    )
        finally:
            self._inflight = None

    async def _rotate(self) -> None:
        """Continue in the next segment (made ahead, or now)."""
        made = self._next
        self._next = None
        fd, path = (
            await made
            if made is not None
            else await asyncio.to_thread(self._new_segment, self._number + 1)
        )
        os.close(self._fd)
        self._sealed.append((self._path, self._last_in_segment))
        self._fd, self._path, self._offset = fd, path, 0
        self._number += 1

    def release(self, stored: int) -> None:
        """Delete the full segments whose every record the store holds (``stored`` and before)."""
        while self._sealed and self._sealed[0][1] <= stored:
            path, _ = self._sealed.pop(0)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def close(self, stored: int) -> None:
        """Stop; delete every segment if the store holds all that was journaled, else keep them."""
        if self._inflight is not None:
            with contextlib.suppress(SpoolError):
                await asyncio.shield(self._inflight)
        paths = self.segments()
        held = len(paths)  # the rest is the segment made ahead: it holds no record
        if self._next is not None:
            try:
                fd, path = await self._next
            except SpoolError:
                pass
            else:
                os.close(fd)
                paths.append(path)
        if self._fd >= 0:
            os.close(self._fd)
        everything = self._error is None and not self._buffer and stored >= self._durable
        for path in paths if everything else paths[held:]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if everything:
            self._sealed.clear()
        self._fd = -1


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    os.fdatasync(fd)
