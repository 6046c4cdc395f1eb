"""The local spool: records the store could not take, on disk until it can.

One file per chain in the spool directory (0700), one JSON line per record, appended and
``fsync``ed before ``append`` returns. Replay hands the records back in the order they were
written; the file is emptied only after the store has committed all of them. The journal
(journal.py) writes the same lines. Lines at the end of a file that do not decode (a last line
without its newline, or garbage a torn write left) are a write the process did not live to finish
(it was never acknowledged) and are ignored; a damaged line with whole records after it is not a
torn write, and ``read`` refuses the file (SpoolError naming the line).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from sidecar.audit.records import Record

SUFFIX = ".spool"
log = logging.getLogger(__name__)


def file_name(chain: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", chain) + SUFFIX


def encode(record: Record) -> bytes:
    row = {
        key: value.hex() if isinstance(value, bytes) else value
        for key, value in record.as_row().items()
    }
    return json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Record:
    row = json.loads(line)
    for key in ("content", "payload", "prev_hash", "hash"):
        row[key] = bytes.fromhex(row[key])
    return Record.from_row(row)


class SpoolError(Exception):
    """The spool itself cannot be written: nothing more may be recorded."""


class Spool:
    """The spool file of one chain."""

    def __init__(self, directory: Path, chain: str) -> None:
        self.directory = directory
        self.path = directory / file_name(chain)
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def open(self) -> None:
        """Create the directory; count what an earlier run of this chain left (normally none)."""
        make_directory(self.directory)
        self._pending = len(read(self.path))

    def append(self, record: Record) -> None:
        self.append_all([record])

    def append_all(self, records: list[Record]) -> None:
        """Append the records in order, then ``fsync`` once."""
        data = b"".join(encode(record) for record in records)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"audit: cannot write the spool {self.path}: {exc.strerror}") from None
        self._pending += len(records)

    def records(self) -> list[Record]:
        return read(self.path)

    def clear(self) -> None:
        """Empty the file (after the store committed every record in it)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"audit: cannot empty the spool {self.path}: {exc.strerror}") from None
        self._pending = 0


def make_directory(directory: Path) -> None:
    """``[audit] spool_dir``, 0700 (SpoolError saying why it cannot be used)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise SpoolError(f"audit: spool_dir {directory} is not a directory") from None
    except OSError as exc:
        raise SpoolError(f"audit: spool_dir {directory} cannot be used: {exc.strerror}") from None


def read(path: Path) -> list[Record]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SpoolError(f"audit: cannot read the spool {path}: {exc.strerror}") from None
    records: list[Record] = []
    damaged = 0  # the first line that did not decode, while only such lines follow it
    for number, line in enumerate(data.split(b"\n")[:-1], 1):  # the last piece is "" or torn
        if not line:
            continue
        try:
            record = decode(line)
        except (ValueError, KeyError, TypeError):
            damaged = damaged or number
            continue
        if damaged:
            raise SpoolError(
                f"audit: {path} line {damaged} is damaged and whole records follow it: not a "
                "torn write; the file is kept (move it aside after inspection to start)"
            )
        records.append(record)
    if damaged:
        log.warning("audit.torn_tail_ignored", extra={"file": path.name, "line": damaged})
    return records


def leftovers(directory: Path, except_path: Path | None = None) -> list[Path]:
    """Spool files of earlier processes that still hold records."""
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.glob(f"*{SUFFIX}")
        if path != except_path and path.stat().st_size > 0
    )
