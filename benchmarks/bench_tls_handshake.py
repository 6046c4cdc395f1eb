"""What a full TLS handshake costs when the client key is in the token (prints figures).

Run: ``make bench-tls-key`` (``benchmarks/bench_tls_handshake.py [--handshakes N]``)

Makes a throw-away SoftHSM token with a ``tls`` key (``hsm.tlskey``), a dev CA certifying it and
a file key, and an ``openssl s_server -Verify 1 -www`` on loopback. Then libcurl (pycurl on
Debian's libcurl/OpenSSL) does N requests on new connections (FORBID_REUSE, no session cache:
every one a full TLS 1.3 handshake with a client certificate), once with the file key and once
with the token key through the ``pkcs11`` engine, alternating twice. Reported: client CPU
(user + system of this process) and wall time per full handshake. The engine's login happens
once, in the warm-up request; requests on a pooled connection never touch the key at all, so
this is the token's whole cost, paid only on new connections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pycurl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsm.pin import read_pin_file
from hsm.tlskey import TlsKeyStore, pkcs11_uri
from hsm.token import HsmToken, TokenConfig
from sidecar.config import HsmConfig, PlatformConfig
from sidecar.keys.tls_key import token_tls_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from softhsm_token import fresh_token

LABEL = "bench-tls"


def _issue(ca_key: ec.EllipticCurvePrivateKey, public: object, cn: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench ca")]))
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    if cn == "bench ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(ca_key, hashes.SHA256())


def _pem(path: Path, data: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(data, x509.Certificate):
        path.write_bytes(data.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            data.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def _measure(handle: pycurl.Curl, n: int) -> tuple[float, float]:
    handle.perform()  # warm-up: the engine's login, the key file's first read
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(n):
        handle.perform()
        if handle.getinfo(pycurl.RESPONSE_CODE) != 200:
            raise SystemExit("the server did not answer 200")
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return cpu / n * 1000, (t1 - t0) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        work = Path(tmp)
        lib, _pin = fresh_token(work / "hsm", LABEL)
        pin_file = work / "user.pin"
        pin_file.touch(mode=0o600)
        pin_file.write_text(_pin.reveal() + "\n")
        hsm = HsmConfig(module=Path(lib), token_label=LABEL, user_pin_file=pin_file)
        token = HsmToken.open(
            TokenConfig(module=lib, token_label=LABEL, user_pin_file=str(pin_file), pool_size=1)
        )
        info = TlsKeyStore(token).generate()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _pem(work / "ca.pem", _issue(ca_key, ca_key.public_key(), "bench ca"))
        token_cert = _pem(
            work / "token.pem",
            _issue(ca_key, serialization.load_der_public_key(info.spki_der), "sidecar"),
        )
        file_key = ec.generate_private_key(ec.SECP256R1())
        file_key_pem = _pem(work / "file-key.pem", file_key)
        file_cert = _pem(work / "file.pem", _issue(ca_key, file_key.public_key(), "sidecar"))
        server_key = ec.generate_private_key(ec.SECP256R1())
        _pem(work / "server-key.pem", server_key)
        _pem(work / "server.pem", _issue(ca_key, server_key.public_key(), "localhost"))
        platform = PlatformConfig(
            url="https://localhost",
            ca_file=ca,
            client_cert_file=token_cert,
            client_key="token:tls",
            transport="curl",
        )
        link = token_tls_key(platform, hsm, token)
        engine_key = link.identity.engine_key
        assert engine_key is not None
        assert engine_key.key_id == pkcs11_uri(LABEL, info.label)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        openssl = shutil.which("openssl") or "/usr/bin/openssl"
        server = subprocess.Popen(  # noqa: S603
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-www", "-quiet",
             "-cert", str(work / "server.pem"), "-key", str(work / "server-key.pem"),
             "-CAfile", str(ca), "-Verify", "1", "-verify_return_error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(0.5)

            def handle(kind: str) -> pycurl.Curl:
                c = pycurl.Curl()
                c.setopt(pycurl.URL, f"https://localhost:{port}/")
                c.setopt(pycurl.RESOLVE, [f"localhost:{port}:127.0.0.1"])
                c.setopt(pycurl.CAINFO, str(ca))
                c.setopt(pycurl.FORBID_REUSE, 1)
                c.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
                c.setopt(pycurl.WRITEDATA, io.BytesIO())
                if kind == "token":
                    c.setopt(pycurl.SSLENGINE, engine_key.engine)
                    c.setopt(pycurl.SSLKEYTYPE, "ENG")
                    c.setopt(pycurl.SSLKEY, engine_key.key_id)
                    c.setopt(pycurl.KEYPASSWD, read_pin_file(pin_file).reveal())
                    c.setopt(pycurl.SSLCERT, str(token_cert))
                else:
                    c.setopt(pycurl.SSLKEY, str(file_key_pem))
                    c.setopt(pycurl.SSLCERT, str(file_cert))
                return c

            print(f"{args.handshakes} full TLS 1.3 handshakes with a client certificate each:")
            for kind in ("file", "token", "file", "token"):
                cpu, wall = _measure(handle(kind), args.handshakes)
                print(f"  {kind:<5} key: client CPU {cpu:.2f} ms, wall {wall:.2f} ms per handshake")
        finally:
            server.kill()
            server.wait()
            link.close()
            token.close()


if __name__ == "__main__":
    main()
