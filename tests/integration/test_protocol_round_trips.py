"""Every transaction of the catalogue through the protocol layer (seal, send, verify, open), over
mTLS, under each message-security scheme, against the simulator's independent implementation.

The sidecar's side signs with a software SM2 key here (the HSM path is proven in
test_message_security.py); the point is the protocol layer itself, transaction by transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from hsm.sm.sm2 import HostSm2Verifier, Sm2PublicKey
from sidecar.config import InstitutionConfig, PlatformConfig
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.curl_transport import CurlTransport
from sidecar.platform.msgid import MsgIdGenerator
from sidecar.platform.sealing import EnvelopeSignature, MobilePayment, Plain, Sealing
from sidecar.platform.security.scheme_a import SchemeA
from sidecar.platform.security.scheme_b import SchemeB, SchemeBConfig
from sidecar.platform.transport import ClientIdentity
from tests.devkit.simulator.support import (
    fee_item,
    now_text,
    person_input,
    register_input,
    settle_input,
)
from tests.software_sm2 import SoftwareSm2
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.crypto import PrivateKey, PublicKey
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import PlainText, SchemeAPlatform, SchemeBPlatform
from yibao_devkit.simulator.server import running_simulator

SM4_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
APP_ID, APP_SECRET = "APPID0000000000000001", "round-trip-secret"
OPERATOR = Operator("op-rt", "op-rt")


def schemes(ours: SoftwareSm2, platform_key: PrivateKey) -> dict[str, tuple[Sealing, Any]]:
    client_key = PublicKey.from_point(ours.public_key.to_bytes())
    theirs = HostSm2Verifier(Sm2PublicKey.from_bytes(platform_key.public_key.point()))
    b_config = SchemeBConfig(app_id=APP_ID, app_secret=APP_SECRET)
    return {
        "plain": (Plain(), PlainText()),
        "envelope-signature": (
            EnvelopeSignature(SchemeA(SM4_KEY, ours, theirs)),
            SchemeAPlatform(SM4_KEY, client_key, platform_key),
        ),
        "mobile-payment": (
            MobilePayment(SchemeB(b_config, ours, theirs)),
            SchemeBPlatform(APP_ID, APP_SECRET, client_key, platform_key),
        ),
    }


@pytest.fixture(params=["plain", "envelope-signature", "mobile-payment"])
async def link(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[PlatformClient, PlatformSimulator]]:
    sealing, security = schemes(SoftwareSm2.generate(), PrivateKey.for_seed(9))[request.param]
    app = PlatformSimulator(Population.generate(21, 30), security=security)
    async with running_simulator(app) as simulator:
        pki = simulator.pki
        platform = PlatformConfig(
            url=simulator.url,
            ca_file=pki.ca_cert,
            client_cert_file=pki.client_cert,
            client_key_file=pki.client_key,
            timeout_seconds=10,
        )
        client = PlatformClient(
            CurlTransport(platform, pki.ca_cert, ClientIdentity(pki.client_cert, pki.client_key)),
            MsgIdGenerator(app.institution_code),
            InstitutionConfig(code=app.institution_code, name="测试机构", division=app.division),
            platform,
            sealing=sealing,
        )
        yield client, app
        await client.close()
    assert app.calls.count("9002") == 1


async def test_every_transaction_round_trips(
    link: tuple[PlatformClient, PlatformSimulator],
) -> None:
    client, app = link
    person = app.population.examples().employee
    call = lambda infno, data: client.call(infno, data, OPERATOR)  # noqa: E731

    psn_no = (await call("1101", person_input(person.certno, person.psn_name)))["baseinfo"][
        "psn_no"
    ]
    assert psn_no == person.psn_no
    benefit = await call("2001", {"data": {"psn_no": psn_no, "insutype": "310",
                                           "fixmedins_code": app.institution_code, "med_type": "11",
                                           "begntime": now_text(), "endtime": ""}})  # fmt: skip
    assert benefit["trtinfo"]
    year_month = now_text()[:7].replace("-", "")
    assert (await call("5206", {"data": {"psn_no": psn_no, "cum_ym": year_month}}))["cuminfo"]
    assert "psnfixmedin" in await call("5302", {"data": {"psn_no": psn_no}})

    async def settle() -> dict[str, Any]:
        visit = await call("2201", register_input(psn_no, person.certno))
        mdtrt_id = str(visit["data"]["mdtrt_id"])
        await call("2204", {"feedetail": [fee_item(mdtrt_id, psn_no, "F0001", pric="88.00")]})
        payload = settle_input(psn_no, person.certno, mdtrt_id, "88.00")
        await call("2206", payload)
        setl: dict[str, Any] = (await call("2207", payload))["setlinfo"]
        assert Decimal(str(setl["medfee_sumamt"])) == Decimal("88.00")
        return setl

    first = await settle()
    cancel = {"setl_id": first["setl_id"], "mdtrt_id": first["mdtrt_id"], "psn_no": psn_no}
    cancelled = await call("2208", {"data": cancel})
    assert cancelled["setlinfo"]
    second = await settle()
    await call(
        "2601", {"data": {"psn_no": psn_no, "omsgid": second["medins_setl_id"], "oinfno": "2207"}}
    )
    assert app.ledger.active_charges(psn_no=psn_no) == []
    assert (await call("5307", {"data": {"psn_no": psn_no}}))["data"]["total"] >= 2

    registered = await call("2501", {"refmedin": {
        "psn_no": psn_no, "insutype": "310", "tel": "13800000000", "addr": "北京市朝阳区某街1号",
        "insu_optins": person.insuplc_admdvs, "mdtrtarea_admdvs": "110000",
        "refl_rea": "异地长期居住", "begndate": "2026-01-01", "enddate": "2026-12-31",
    }})  # fmt: skip
    serial = registered["result"]["trt_dcla_detl_sn"]
    listed = (await call("5304", {"data": {"psn_no": psn_no}}))["refmedin"]
    assert serial in {row["trt_dcla_detl_sn"] for row in listed}
    await call("2502", {"data": {"trt_dcla_detl_sn": serial, "psn_no": psn_no, "memo": "返回"}})
    for infno in ("1101", "2001", "5206", "5302", "2201", "2204", "2206", "2207", "2208",
                  "2601", "5307", "2501", "5304", "2502"):  # fmt: skip
        assert app.calls.count(infno) >= 1, infno
