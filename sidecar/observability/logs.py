"""Structured JSON logs, one object per line on standard error.

Log records carry event names and identifiers of the call (method, status, tenant, trace ID),
never request or answer content: the content is personal data and belongs only in the
encrypted audit trail. Extra fields are passed with ``logger.info("event", extra={...})``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from sidecar.observability.masking import scrub

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as a single-line JSON object with a UTC timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                # a safety net: identity and phone numbers that slipped into text are masked
                entry[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: tracebacks can quote local values that hold personal data.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger through one JSON handler at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' debug chatter can include URLs and headers, and the store drivers' the SQL
    # parameters (personal data of other components' rows); keep them at WARNING.
    for noisy in (
        "hpack", "httpx", "httpcore", "h2", "hypercorn.access", "aiosqlite", "psycopg",
    ):  # fmt: skip
        logging.getLogger(noisy).setLevel(logging.WARNING)
