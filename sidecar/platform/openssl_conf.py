"""Loading an OpenSSL configuration into this process's OpenSSL: the engine of an ``EngineKey``.

OpenSSL reads ``OPENSSL_CONF`` once, when the process first initialises it (Python's ``ssl`` and
libcurl do so at import, long before the sidecar's configuration is known), so the engine section
that names the PKCS#11 module is applied with ``CONF_modules_load_file`` instead; the configuration
never travels through the environment. The one libcrypto loaded here is Debian's, the one libcurl
uses (tests/sidecar/platform/test_curl_transport.py checks the linkage).

An engine can be configured once per process: the same configuration (by content) loads once and
is then a no-op, whoever asks (the start-up glue in sidecar/keys/tls_key.py and the transport); a
different one after it is refused with a message saying so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from pathlib import Path

_LOCK = threading.Lock()
_LOADED: set[bytes] = set()


class OpenSslConfigError(Exception):
    """An OpenSSL configuration could not be loaded (the message names the file)."""


def load_openssl_conf(path: Path) -> None:
    """Apply ``path`` to this process's OpenSSL, once per configuration content."""
    try:
        content = path.read_bytes()
    except OSError:
        raise OpenSslConfigError(f"OpenSSL configuration {path} is not a readable file") from None
    with _LOCK:
        if content in _LOADED:
            return
        name = ctypes.util.find_library("crypto") or "libcrypto.so.3"
        crypto = ctypes.CDLL(name)
        load = crypto.CONF_modules_load_file
        load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
        load.restype = ctypes.c_int
        if load(str(path.resolve()).encode(), None, 0) != 1:
            crypto.ERR_clear_error()
            already = " (another engine configuration is loaded in this process)" if _LOADED else ""
            raise OpenSslConfigError(f"OpenSSL cannot load the configuration {path}{already}")
        _LOADED.add(content)
