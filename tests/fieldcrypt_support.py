"""A sealer for store tests that run without an HSM: data keys wrapped by a random host key."""

from __future__ import annotations

import secrets

from sidecar.keys.fieldcrypt import FieldSealer, HostKeyWrapper


def host_sealer() -> FieldSealer:
    return FieldSealer(HostKeyWrapper(secrets.token_bytes(16)))
