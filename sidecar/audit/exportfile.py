"""The lines ``yibao-audit export`` writes: JSON Lines, UTF-8 as is (no ``\\u`` escapes).

One record per line, ``{"chain", "seq", "record", "payload"}``: ``record`` is the record's fields
and ``payload`` the decrypted request or answer *as JSON* (an object, not a string holding JSON),
``null`` for a record that carries none (``chain.start``, ``export``). A payload that is not JSON
(none is written so, but a reader must not have to guess) is kept as text in ``payload_text``
with ``payload`` null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def export_line(row: Mapping[str, Any]) -> str:
    """``row`` (from ``maintenance.export_subject``: payload as decrypted text) as one line."""
    text = row["payload"]
    line = {key: value for key, value in row.items() if key != "payload"}
    try:
        line["payload"] = json.loads(text) if text else None
    except ValueError:
        line["payload"], line["payload_text"] = None, text
    return json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n"
