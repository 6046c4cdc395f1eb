"""Settlement pieces without I/O: configuration, amounts in fen, digests, the 2207 answer."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import config
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.compliance.pseudonyms import HostPseudonymizer
from sidecar.config import ConfigError
from sidecar.errors import GatewayError
from sidecar.gateway.settlement import SettlementFunctions, payload_digest
from sidecar.platform.errors import PlatformRefusal
from sidecar.settlement import chain, machine
from sidecar.settlement import errors as outcomes
from sidecar.settlement.errors import SettlementError
from tests.sidecar.test_config import MINIMAL, write


def test_second_confirmation_is_configured_per_division(tmp_path: Path) -> None:
    text = MINIMAL + '\n[settlement]\nsecond_confirmation = { "4403" = "sms_code" }\n'
    settings = config.load(write(tmp_path, text), environ={})
    assert settings.settlement.second_confirmation == {"4403": "sms_code"}
    assert settings.settlement.late_arrival_seconds == 60.0
    with pytest.raises(ConfigError, match=r"settlement\.second_confirmation"):
        config.load(
            write(
                tmp_path, MINIMAL + '\n[settlement]\nsecond_confirmation = { "440" = "sms_code" }\n'
            ),
            environ={},
        )
    with pytest.raises(ConfigError, match=r"settlement\.second_confirmation"):
        config.load(
            write(tmp_path, MINIMAL + '\n[settlement]\nsecond_confirmation = { "44" = "fax" }\n'),
            environ={},
        )
    overridden = config.load(
        write(tmp_path, MINIMAL),
        environ={"YIBAO_SIDECAR__SETTLEMENT__LATE_ARRIVAL_SECONDS": "90"},
    )
    assert overridden.settlement.late_arrival_seconds == 90.0


@given(st.integers(min_value=0, max_value=10**12))
def test_fen_survive_the_round_trip_through_yuan(amount: int) -> None:
    assert chain.fen(chain.yuan(amount), "x") == amount
    assert chain.fen(str(chain.yuan(amount)), "x") == amount


@pytest.mark.parametrize("bad", ["1.234", "NaN", "abc", "Infinity"])
def test_amounts_that_are_not_whole_fen_are_refused(bad: str) -> None:
    with pytest.raises(chain.AnswerProblem):
        chain.fen(bad, "x")


def answer(**changes: object) -> dict[str, object]:
    info: dict[str, object] = {
        "setl_id": "S1",
        "medfee_sumamt": Decimal("30.00"),
        "fund_pay_sumamt": Decimal("12.34"),
        "acct_pay": Decimal("10.00"),
        "psn_cash_pay": Decimal("5.66"),
        "balc": Decimal("100.01"),
        "medins_setl_id": "M1",
    }
    info.update(changes)
    return {"setlinfo": info}


def test_the_2207_answer_in_fen_with_the_rest_as_other() -> None:
    charged = chain.charged_from(answer(), 3000, "M1")
    assert (charged.fund_fen, charged.account_fen, charged.cash_fen, charged.other_fen) == (
        1234, 1000, 566, 200,
    )  # fmt: skip
    assert charged.balance_after_fen == 10001


@pytest.mark.parametrize(
    "changes",
    [
        {"medins_setl_id": "M2"},  # an answer to another message
        {"medfee_sumamt": Decimal("29.99")},  # another total
        {"psn_cash_pay": Decimal("9.00")},  # parts above the total
        {"setl_id": None},
        {"acct_pay": Decimal("0.001")},
    ],
)
def test_a_2207_answer_that_does_not_fit_is_a_problem(changes: dict[str, object]) -> None:
    with pytest.raises(chain.AnswerProblem):
        chain.charged_from(answer(**changes), 3000, "M1")


async def test_the_payload_digest_ignores_the_request_id_only() -> None:
    one = gateway.SettleWithEVoucherRequest(request_id="a", ec_token="t", total_fen=1)
    two = gateway.SettleWithEVoucherRequest(request_id="b", ec_token="t", total_fen=1)
    three = gateway.SettleWithEVoucherRequest(
        request_id="a", ec_token="t", total_fen=1, sms_code="1"
    )
    digests = HostPseudonymizer(b"settlement-test-key")
    d1, d2, d3 = [await payload_digest(digests, r) for r in (one, two, three)]
    assert d1 == d2 != d3
    assert one.request_id == "a"  # the caller's message is left alone


def _every_outcome() -> list[SettlementError]:
    refusal = PlatformRefusal("1101", -1, "某某原因")
    made: dict[type[SettlementError], SettlementError] = {
        outcomes.KeyReused: outcomes.KeyReused(),
        outcomes.InProgress: outcomes.InProgress(),
        outcomes.NotFound: outcomes.NotFound(),
        outcomes.Unrecorded: outcomes.Unrecorded(),
        outcomes.PersonRefused: outcomes.PersonRefused(refusal),
        outcomes.Refused: outcomes.Refused("-1", "某某原因"),
        outcomes.Unreachable: outcomes.Unreachable("the insurance platform is unreachable: x"),
        outcomes.Pending: outcomes.Pending(timed_out=False, retry_after=15.0),
    }
    # a new outcome without an example here (and so, maybe, without a status) fails the test
    assert set(made) == set(SettlementError.__subclasses__())
    return list(made.values())


def test_every_settlement_outcome_has_its_own_status_and_the_machine_has_no_grpc() -> None:
    functions = SettlementFunctions(
        None,  # type: ignore[arg-type]  # the mapping needs neither the machine nor digests
        HostPseudonymizer(b"k" * 32),
        config.InstitutionConfig(code="H44030500001", name="x", division="440305"),
        config.SettlementConfig(),
        person_not_found=config.PlatformConfig.model_fields["person_not_found_messages"].default,
    )
    reasons = set()
    for outcome in _every_outcome():
        with pytest.raises(GatewayError) as caught, functions._contract_errors():
            raise outcome
        assert caught.value.reason != "INTERNAL", outcome
        reasons.add(caught.value.reason)
    assert reasons >= {"IDEMPOTENCY_KEY_REUSED", "REQUEST_IN_PROGRESS", "SETTLEMENT_NOT_FOUND"}
    source = Path(machine.__file__).read_text(encoding="utf-8")
    assert "import grpc" not in source and "from grpc" not in source
