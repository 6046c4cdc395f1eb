"""No TLS private key on disk in HSM mode, and the PIN nowhere but in its file.

``yibao-sidecar serve`` runs under ``strace -f`` with its TLS key in SoftHSM, completes a platform
call over mutual TLS, and then every regular file any of its threads opened is read: none holds a
private key (a PEM ``PRIVATE KEY`` block, or the DER of an EC or RSA private key anywhere in the
file), the TLS key's public point appears only in the token's own store, the configuration and
the environment name no key file, and the PIN is in no file but its own, nor in the process's
argv, environment, logs or error messages. The same check run against the sidecar with a key file
(development mode) finds that key: it would fail if HSM mode ever used one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.hsm_fixtures import SoftHsmTokens
from tests.integration.test_tls_key_sidecar import (
    TlsTokens,
    base_url,
    consent,
    enrollment,
    make_tls_tokens,
    serving,
    sidecar_config,
    stop,
    token_platform,
)
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

# A whole PEM block (libraries hold the bare BEGIN line as a string constant: not a key).
PEM_PRIVATE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----\r?\n(?:[A-Za-z0-9+/=:, -]*\r?\n)+?-----END \1-----"
)
# A DER SEQUENCE whose first element is INTEGER 0 or 1: how PKCS#8, RFC 5915 (EC) and PKCS#1
# (RSA) private keys begin. Each candidate is handed to cryptography's DER parser.
DER_CANDIDATE = re.compile(
    rb"\x30(?:[\x00-\x7f]|\x81[\x80-\xff]|\x82[\x00-\xff]{2})\x02\x01[\x00\x01]"
)
# strace -y: ``123 openat(AT_FDCWD</cwd>, "path", ...) = 3`` (the directory fd decoded)
OPEN_CALL = re.compile(
    r'^\d+\s+open(?:at2?)?\((?:(?:AT_FDCWD|\d+)(?:<([^>]*)>)?, )?"((?:[^"\\]|\\.)*)"'
)


@dataclass(frozen=True)
class KeyFound:
    """A private key inside a file: where, and its public key (None when encrypted)."""

    where: str  # "pem@<offset>" or "der@<offset>"
    public_point: bytes | None


def _public(key: object) -> bytes | None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return key.public_key().public_numbers().n.to_bytes(512, "big")
    return None


def der_private_keys(data: bytes) -> list[KeyFound]:
    """The DER EC or RSA private keys inside ``data``."""
    found = []
    for match in DER_CANDIDATE.finditer(data):
        start = match.start()
        first = data[start + 1]
        if first < 0x80:
            size, header = first, 2
        elif first == 0x81:
            size, header = data[start + 2], 3
        else:
            size, header = int.from_bytes(data[start + 2 : start + 4], "big"), 4
        try:
            key = serialization.load_der_private_key(data[start : start + header + size], None)
        except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: not an EC or RSA key
            continue
        if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            found.append(KeyFound(f"der@{start}", _public(key)))
    return found


def private_material(data: bytes) -> list[KeyFound]:
    """Every private key in ``data``: whole PEM blocks (even encrypted ones), then DER."""
    found = []
    for match in PEM_PRIVATE.finditer(data):
        try:
            public = _public(serialization.load_pem_private_key(match.group(0), None))
        except Exception:  # encrypted, or a key type cryptography does not read: still a key
            public = None
        found.append(KeyFound(f"pem@{match.start()}", public))
    return found + der_private_keys(data)


def opened_paths(trace: Path, cwd: Path) -> set[Path]:
    """Every path an open/openat/openat2 of the trace opened (the call returned a descriptor),
    including calls strace split in two (``<unfinished ...>``, then ``<... openat resumed>``)."""
    paths, pending = set(), {}
    for line in trace.read_text(errors="replace").splitlines():
        pid = line.split(maxsplit=1)[0]
        if (match := OPEN_CALL.match(line)) is not None:
            where, name = match.group(1), match.group(2).encode().decode("unicode_escape")
            path = Path(name) if Path(name).is_absolute() else Path(where or cwd) / name
            if line.endswith("<unfinished ...>"):
                pending[pid] = path
                continue
        elif re.search(r"<\.\.\. open(?:at2?)? resumed>", line) and pid in pending:
            path = pending.pop(pid)
        else:
            continue
        result = re.search(r"\) = (-?\d+)", line)
        if result is not None and int(result.group(1)) >= 0:
            paths.add(path)
    return paths


def created_paths(trace: Path) -> set[str]:
    """Paths the traced process created itself (O_CREAT), or opened as directories."""
    return {
        match.group(2)
        for line in trace.read_text(errors="replace").splitlines()
        if ("O_CREAT" in line or "O_DIRECTORY" in line)
        and (match := OPEN_CALL.match(line)) is not None
    }


def open_descriptors(pid: int) -> list[bytes]:
    """The content of every regular file ``pid`` holds open, unlinked ones included."""
    contents = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if fd.is_file():
                contents.append(fd.read_bytes())
    return contents


@dataclass
class Scan:
    """What the files a process opened hold."""

    read: list[Path] = field(default_factory=list)
    gone: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)  # directories, devices, sockets
    keys: dict[Path, list[KeyFound]] = field(default_factory=dict)
    with_point: list[Path] = field(default_factory=list)
    with_pin: list[Path] = field(default_factory=list)


def scan(paths: set[Path], point: bytes | None, pin: str) -> Scan:
    result = Scan()
    for path in sorted(paths):
        if path.is_relative_to("/proc") or path.is_relative_to("/sys"):
            continue
        if not path.exists():
            result.gone.append(path)
            continue
        if not path.is_file():
            result.other.append(path)
            continue
        data = path.read_bytes()
        result.read.append(path)
        if hits := private_material(data):
            result.keys[path] = hits
        if point is not None and point in data:
            result.with_point.append(path)
        if pin.encode() in data:
            result.with_pin.append(path)
    return result


STRACE = shutil.which("strace")
# Read-only library trees: Debian's, the interpreter's and the virtualenv's packages.
LIBRARIES = (
    Path("/usr/lib"),
    Path("/lib"),
    Path("/usr/lib64"),
    Path(sys.base_prefix),
    Path(sys.prefix) / "lib",
)


def in_libraries(path: Path) -> bool:
    return any(path.is_relative_to(tree) for tree in LIBRARIES)


def traced(trace: Path) -> tuple[str, ...]:
    """The strace prefix; the test fails (never skips) without strace (scripts/bootstrap.sh)."""
    if STRACE is None:
        pytest.fail("strace is not installed: run scripts/bootstrap.sh", pytrace=False)
    return (STRACE, "-f", "-qq", "-y", "-e", "trace=open,openat,openat2", "-o", str(trace))


def proc_strings(pid: int, name: str) -> list[str]:
    return [part.decode() for part in Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0") if part]


def assert_names_no_key_and_no_pin(values: list[str], pin: str) -> None:
    """No argument or ``NAME=value`` holds the PIN or names a file holding a private key."""
    for value in values:
        assert pin not in value
        candidate = Path(value.partition("=")[2] or value)
        if candidate.is_absolute() and candidate.is_file():
            assert not private_material(candidate.read_bytes()), value


@pytest.fixture(scope="module")
def tls_tokens(
    softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory
) -> TlsTokens:
    return make_tls_tokens(softhsm_tokens, tmp_path_factory.mktemp("tls-disk"), "tlsk-disk")


@pytest.mark.slow
async def test_in_hsm_mode_no_file_the_sidecar_opens_holds_a_private_key_or_the_pin(
    tls_tokens: TlsTokens, softhsm_tokens: SoftHsmTokens, short_dir: Path, tmp_path: Path
) -> None:
    trace = tmp_path / "open.trace"
    pin = tls_tokens.pin
    async with running_simulator(pki=tls_tokens.pki, seed=3, population_size=10) as simulator:
        config = sidecar_config(
            tmp_path / "sidecar.toml",
            short_dir,
            platform=token_platform(tls_tokens, base_url(simulator)),
            hsm=tls_tokens.hsm(),
            simulator=simulator,
        )
        async with serving(config, tls_tokens.main.env(), traced(trace)) as process:
            await consent(process.channel, simulator)
            assert (await enrollment(process.channel, simulator)).enrollments
            argv = proc_strings(process.pid, "cmdline")
            environ = proc_strings(process.pid, "environ")
            # While it runs: the engine's configuration, removed at exit, is still there.
            running = scan(opened_paths(trace, Path.cwd()), tls_tokens.public_point, pin)
            held = open_descriptors(process.pid)
            stderr = stop(process)
        assert simulator.app.calls.count("1101") == 1
    after = scan(opened_paths(trace, Path.cwd()), tls_tokens.public_point, pin)

    assert len(running.read) > 100  # the interpreter, its libraries, the token: really traced
    assert any(p.name == "openssl.cnf" for p in running.read)  # the engine's, in its 0700 dir
    for found in (running, after):
        # Libraries carry self-test keys (libgnutls: its FIPS known-answer vectors); no other
        # file holds a private key, and no key anywhere is the TLS key.
        outside = {p: k for p, k in found.keys.items() if not in_libraries(p)}
        assert outside == {}, outside
        assert not any(
            k.public_point == tls_tokens.public_point for keys in found.keys.values() for k in keys
        )
        # The public point is where the token keeps the key pair: SoftHSM's own store (the
        # private half in it is encrypted under the PIN; no DER private key was found there).
        token_store = softhsm_tokens.run_dir / "tokens"
        assert found.with_point, "the token's store holds the key's public point"
        assert all(p.is_relative_to(token_store) for p in found.with_point), found.with_point
        # The PIN is in its own file only.
        assert found.with_pin == [tls_tokens.main.user_pin_file], found.with_pin
    # What vanished before the last scan was scanned while it existed, or the process made it.
    made = created_paths(trace)

    def seen(path: Path) -> bool:
        directory = any(r.is_relative_to(path) for r in running.read)
        return path in running.read + running.other or str(path) in made or directory

    assert all(seen(p) for p in after.gone), [p for p in after.gone if not seen(p)]
    assert held and not any(private_material(data) for data in held)  # unlinked ones too
    assert not any(pin.encode() in data for data in held)

    settings = tomllib.loads(config.read_text())
    assert "client_key_file" not in settings["platform"] and "client_key" in settings["platform"]
    assert_names_no_key_and_no_pin([*environ, *argv], pin)
    assert not any(v.startswith("SSLKEYLOGFILE=") for v in environ)
    assert pin not in stderr and pin not in trace.read_text(errors="replace")


@pytest.mark.slow
async def test_the_same_check_finds_the_key_file_of_development_mode(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    """The control: with ``client_key_file`` the scan finds that key (and the config names it)."""
    trace = tmp_path / "open.trace"
    pki = simulator.pki
    platform = {
        "url": base_url(simulator),
        "ca_file": pki.ca_cert,
        "client_cert_file": pki.client_cert,
        "client_key_file": pki.client_key,
    }
    config = sidecar_config(
        tmp_path / "sidecar.toml", short_dir, platform=platform, hsm=None, simulator=simulator
    )
    async with serving(config, {}, traced(trace)) as process:
        await consent(process.channel, simulator)
        assert (await enrollment(process.channel, simulator)).enrollments
        stop(process)
    found = scan(opened_paths(trace, Path.cwd()), None, "no PIN in this mode")
    outside = {p: k for p, k in found.keys.items() if not in_libraries(p)}
    assert list(outside) == [pki.client_key], found.keys
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).public_key()
    assert isinstance(client, ec.EllipticCurvePublicKey)
    point = client.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert outside[pki.client_key] == [KeyFound("pem@0", point)]
    assert tomllib.loads(config.read_text())["platform"]["client_key_file"] == str(pki.client_key)


def test_der_private_keys_are_found_inside_any_file(tmp_path: Path) -> None:
    """The DER half of the check: EC (PKCS#8 and RFC 5915) and RSA (PKCS#1) keys hidden in bytes
    that are not a key are found; public keys and certificates are not private material."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none = serialization.NoEncryption()
    der = serialization.Encoding.DER
    blobs = [
        ec_key.private_bytes(der, serialization.PrivateFormat.PKCS8, none),
        ec_key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none),
        rsa_key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none),
    ]
    for blob in blobs:
        data = os.urandom(1000) + blob + os.urandom(1000)
        assert [k.where for k in der_private_keys(data)] == ["der@1000"]
        assert [k.where for k in private_material(data)] == ["der@1000"]
    public = ec_key.public_key().public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert private_material(os.urandom(100) + public) == []
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    # even encrypted, a key on disk
    assert private_material(b"x" * 10 + pem) == [KeyFound("pem@10", None)]
