"""The platform tunnel's TLS client key in the HSM, turned into the transport's ``EngineKey``.

``[platform] client_key = "token:tls"`` (or ``"token:tls/<version>"``) names the newest (or that)
``tls/<version>`` key that ``yibao-hsm keygen --purpose tls`` made in the token ``[hsm]
tls_token_label`` (same module and PIN file; default: the ``[hsm]`` token itself). Debian 12's
libp11 (0.4.12) cannot find any key in a token that also holds a private key neither EC nor RSA
(the SM2 signing key): start-up refuses that in one line. At start-up this module checks that the
key obeys the TLS key policy (sign-only, non-extractable) and that ``client_cert_file`` certifies
it, then builds what libcurl hands to OpenSSL:

- the engine ``pkcs11`` (libp11, Debian ``libengine-pkcs11-openssl``);
- a ``pkcs11:token=...;object=...;type=private`` URI, never with the PIN in it;
- the user PIN read from ``[hsm] user_pin_file`` as a ``Pin`` that never prints (curl passes it
  as CURLOPT_KEYPASSWD to the engine's UI method: not in a URI, argv, environment or file);
- an OpenSSL configuration naming the engine and ``MODULE_PATH = [hsm] module``, written in a
  private 0700 directory removed by :meth:`TokenTlsKey.close`; nothing secret is in it. It is
  loaded into the process's OpenSSL here (:func:`load_engine_config`), so the transport only
  names the engine.

A key file (development only) is checked against its certificate by the transport's start-up
check (``sidecar.platform.transport.check_tls_files``): libcurl would read it only at the first
handshake. Every failure is one line naming what is at fault.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem  # type: ignore[import-untyped]

from hsm.errors import HsmError, MalformedInput
from hsm.pin import read_pin_file
from hsm.tlskey import (
    TlsKeyInfo,
    TlsKeyStore,
    find_pkcs11_engine,
    openssl_engine_config,
    pkcs11_uri,
    spki_of_certificate,
)
from hsm.token import HsmToken, TokenConfig
from sidecar.config import ConfigError, HsmConfig, PlatformConfig
from sidecar.platform.openssl_conf import OpenSslConfigError, load_openssl_conf
from sidecar.platform.transport import ClientIdentity, EngineKey

log = logging.getLogger(__name__)

ENGINE = "pkcs11"
_loaded_modules: set[str] = set()


def load_engine_config(conf: Path, module: str) -> None:
    """Load the engine configuration into this process's OpenSSL (the one libcurl uses).

    OpenSSL reads ``OPENSSL_CONF`` once, when the process first initialises it (Python's ``ssl``
    does so at import, long before the configuration is known), so the file is applied with
    ``CONF_modules_load_file``: the ``pkcs11`` engine joins OpenSSL's engine list with its
    ``MODULE_PATH`` and curl's ``CURLOPT_SSLENGINE "pkcs11"`` finds it. Once per module and
    process; a second module in the same process is refused.
    """
    if module in _loaded_modules:
        return
    if _loaded_modules:
        raise ConfigError(
            f"config: hsm.module {module}: the pkcs11 engine already serves another module"
        )
    try:
        load_openssl_conf(conf)
    except OpenSslConfigError:
        raise ConfigError(
            f"config: platform.client_key: OpenSSL could not load the pkcs11 engine for {module}"
        ) from None
    _loaded_modules.add(module)


def _leaf_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"config: platform.client_cert_file: cannot read {path}: {exc.strerror}"
        ) from None
    if pem.detect(data):
        for kind, _, der in pem.unarmor(data, multiple=True):
            if kind == "CERTIFICATE":
                return bytes(der)
        raise ConfigError(f"config: platform.client_cert_file: {path} holds no CERTIFICATE")
    return data


@dataclass
class TokenTlsKey:
    """The client identity with its key in the token, and the private directory to remove."""

    identity: ClientIdentity
    key_label: str
    fingerprint: str
    directory: Path

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def token_tls_key(platform: PlatformConfig, hsm: HsmConfig, token: HsmToken) -> TokenTlsKey:
    """The ``EngineKey`` identity of ``platform.client_key``, checked against the certificate.

    The key is in ``[hsm] tls_token_label`` when set (a token of its own, opened here with the
    same module and PIN file and closed again: the engine logs in itself), else in ``token``.
    """
    if platform.client_key is None:
        raise ConfigError("config: platform.client_key is not set")
    wanted = platform.client_key.removeprefix("token:")
    if hsm.tls_token_label is None or hsm.tls_token_label == token.token_label:
        info, label = _token_key(token, wanted)
    else:
        info, label = _own_token_key(hsm, hsm.tls_token_label, wanted)
    try:
        cert_spki = spki_of_certificate(_leaf_der(platform.client_cert_file))
    except MalformedInput as exc:
        raise ConfigError(f"config: platform.client_cert_file: {exc}") from None
    if cert_spki != info.spki_der:
        raise ConfigError(
            f"config: platform.client_cert_file {platform.client_cert_file} does not certify "
            f"platform.client_key {info.label} (public keys differ)"
        )
    try:
        pin = read_pin_file(hsm.user_pin_file)
        conf_text = openssl_engine_config(hsm.module.resolve(), find_pkcs11_engine())
    except HsmError as exc:
        raise ConfigError(f"config: platform.client_key: {exc}") from None
    directory = Path(tempfile.mkdtemp(prefix="yibao-openssl-"))  # mode 0700
    try:
        conf = directory / "openssl.cnf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(conf_text)
        load_engine_config(conf, str(hsm.module.resolve()))
        key = EngineKey(ENGINE, pkcs11_uri(label, info.label), pin, conf)
        identity = ClientIdentity(platform.client_cert_file, engine_key=key)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    log.info("tls_key.token", extra={"key": info.label, "fingerprint": info.fingerprint[:16]})
    return TokenTlsKey(identity, info.label, info.fingerprint, directory)


def _token_key(token: HsmToken, wanted: str) -> tuple[TlsKeyInfo, str]:
    """The key ``wanted`` (``tls`` or ``tls/<version>``) of ``token``, if the engine can use it."""
    store = TlsKeyStore(token)
    try:
        info = store.current(None if wanted == "tls" else wanted)
        unreadable = store.engine_unreadable()
    except HsmError as exc:
        raise ConfigError(
            f"config: platform.client_key: {exc} (yibao-hsm keygen --purpose tls)"
        ) from None
    if unreadable:
        raise ConfigError(
            f"config: platform.client_key: token {token.token_label!r} also holds "
            f"{', '.join(unreadable)}, neither EC nor RSA, and the pkcs11 engine (libp11 0.4.12) "
            "then finds no key: keep the TLS key in a token of its own (hsm.tls_token_label)"
        )
    return info, token.token_label


def _own_token_key(hsm: HsmConfig, label: str, wanted: str) -> tuple[TlsKeyInfo, str]:
    try:
        token = HsmToken.open(
            TokenConfig(
                module=str(hsm.module),
                token_label=label,
                profile=hsm.profile,
                user_pin_file=str(hsm.user_pin_file),
                pool_size=1,
            )
        )
    except HsmError as exc:
        raise ConfigError(f"config: hsm.tls_token_label: {exc}") from None
    try:
        return _token_key(token, wanted)
    finally:
        token.close()


def file_key_warning(platform: PlatformConfig, hsm: HsmConfig | None) -> str | None:
    """The start-up warning when an HSM is configured but the TLS key is still a file."""
    if hsm is not None and platform.client_key_file is not None:
        return "platform.client_key_file_with_hsm_development_only"
    return None


__all__ = [
    "TokenTlsKey",
    "file_key_warning",
    "load_engine_config",
    "token_tls_key",
]
