"""The devkit simulator's gateway accepts the sidecar's TLS client key held in SoftHSM.

The dev CA certifies the token key (``devcerts.generate_for_client_key``: no client key file
exists); the sidecar's start-up glue (``token_tls_key``) builds the ``EngineKey`` and libcurl
(pycurl on Debian's libcurl and OpenSSL) presents it through the ``pkcs11`` engine. The same
request with a key from another CA is refused by the gateway during the handshake."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from hsm.tlskey import TlsKeyStore
from tests.conftest import REPO
from tests.hsm_fixtures import SoftHsmTokens
from yibao_devkit import devcerts
from yibao_devkit.simulator.server import running_simulator

REQUEST = r"""
import io, json, sys
import ssl  # OpenSSL initialised first, as in the sidecar
import pycurl
from pathlib import Path
from hsm.token import HsmToken, TokenConfig
from sidecar.config import HsmConfig, PlatformConfig
from sidecar.keys.tls_key import token_tls_key

args = json.loads(sys.argv[1])
hsm = HsmConfig(**args["hsm"])
platform = PlatformConfig(url=args["url"], ca_file=Path(args["ca"]),
    client_cert_file=Path(args["cert"]), client_key="token:tls", transport="curl")
token = HsmToken.open(TokenConfig(module=str(hsm.module), token_label=hsm.token_label,
                                  user_pin_file=str(hsm.user_pin_file), pool_size=1))
link = token_tls_key(platform, hsm, token)
key = link.identity.engine_key
out = {}
for name, client in (("token", None), ("stranger", args["stranger"])):
    c = pycurl.Curl()
    c.setopt(pycurl.URL, args["url"] + "/")
    c.setopt(pycurl.CAINFO, args["ca"])
    c.setopt(pycurl.WRITEDATA, io.BytesIO())
    c.setopt(pycurl.FORBID_REUSE, 1)
    if client is None:
        c.setopt(pycurl.SSLENGINE, key.engine)
        c.setopt(pycurl.SSLKEYTYPE, "ENG")
        c.setopt(pycurl.SSLKEY, key.key_id)
        c.setopt(pycurl.KEYPASSWD, key.pin.reveal())
        c.setopt(pycurl.SSLCERT, str(platform.client_cert_file))
    else:
        c.setopt(pycurl.SSLCERT, client[0])
        c.setopt(pycurl.SSLKEY, client[1])
    try:
        c.perform()
        out[name] = {"status": c.getinfo(pycurl.RESPONSE_CODE)}
    except pycurl.error as exc:
        out[name] = {"error": exc.args[0]}
    c.close()
link.close()
print(json.dumps(out))
"""


async def test_the_simulator_gateway_accepts_the_token_key_and_refuses_a_stranger(
    softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    made = softhsm_tokens.make("yibao-sim-tls")
    with made.open(pool_size=1) as token:
        spki = TlsKeyStore(token).generate().spki_der
    pki = devcerts.generate_for_client_key(
        tmp_path / "pki", serialization.load_der_public_key(spki)
    )
    assert not pki.client_key.exists()  # no TLS private key on disk
    async with running_simulator(pki=pki, population_size=5) as simulator:
        arg = json.dumps(
            {
                "hsm": made.hsm_section(),
                "url": simulator.url,
                "ca": str(pki.ca_cert),
                "cert": str(pki.client_cert),
                "stranger": [str(pki.other_client_cert), str(pki.other_client_key)],
            }
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REQUEST,
            arg,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=made.env(),
            cwd=REPO,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    # Any HTTP answer means the gateway completed the mutual-TLS handshake with the token key.
    assert 100 <= result["token"]["status"] < 600, result
    # Another CA's client certificate: the gateway aborts the connection and never answers (with
    # TLS 1.3 the client learns it from the alert while reading, so curl's error code varies).
    assert "error" in result["stranger"] and "status" not in result["stranger"], result
    pin = made.user_pin_file.read_text().strip()
    assert pin.encode() not in out + err
