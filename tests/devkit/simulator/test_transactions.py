"""Every transaction round trip over real mutual TLS, and the state each one leaves behind."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import httpx

from tests.devkit.simulator.support import (
    EnvelopeFactory,
    Session,
    fee_item,
    now_text,
    person_input,
    register_input,
    settle_input,
)
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import (
    PlatformSimulator,
    Population,
    card_sn,
    errors,
    policy,
    running_simulator,
)
from yibao_devkit.simulator.ledger import EntryKind
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.times import BEIJING
from yibao_devkit.simulator.transactions import default_registry


def money(value: Any) -> Decimal:
    return Decimal(str(value))


async def open_visit(
    session: Session, person: Person, items: list[tuple[str, str, str]], **register: Any
) -> tuple[str, Decimal]:
    """2201 then 2204 with (code, pric, cnt) items; the mdtrt_id and the bill's total."""
    assert person.psn_no is not None
    visit = await session.ok("2201", register_input(person.psn_no, person.certno, **register))
    mdtrt_id = str(visit["data"]["mdtrt_id"])
    details = [
        fee_item(mdtrt_id, person.psn_no, f"F{index:04d}", code=code, pric=pric, cnt=cnt)
        for index, (code, pric, cnt) in enumerate(items, 1)
    ]
    result = await session.ok("2204", {"feedetail": details})
    assert [row["feedetl_sn"] for row in result["result"]] == [d["feedetl_sn"] for d in details]
    return mdtrt_id, sum((Decimal(d["det_item_fee_sumamt"]) for d in details), Decimal(0))


async def balance(session: Session, person: Person) -> Decimal:
    output = await session.ok("1101", person_input(person.certno, person.psn_name))
    return money(output["insuinfo"][0]["balc"])


async def cumulative(session: Session, person: Person) -> dict[tuple[str, str], Decimal]:
    output = await session.ok(
        "5206", {"data": {"psn_no": person.psn_no, "cum_ym": f"{dt.datetime.now(BEIJING):%Y%m}"}}
    )
    return {(row["insutype"], row["cum_type_code"]): money(row["cum"]) for row in output["cuminfo"]}


# -- 1101 vouchers -------------------------------------------------------------------------------


async def test_person_info_by_e_voucher_token(session: Session, population: Population) -> None:
    app: PlatformSimulator = session.simulator.app
    employee = population.examples().employee
    token = app.issue_ec_token(employee.certno)
    assert len(token) >= 32 and employee.certno not in token
    payload = person_input(token, "", cert_type="01")
    payload["data"].update(certno=employee.certno, psn_name=employee.psn_name)
    output = await session.ok("1101", payload)
    assert output["baseinfo"]["psn_no"] == employee.psn_no
    # A token names one person only.
    payload["data"]["certno"] = population.examples().resident.certno
    assert await session.refused("1101", payload) == errors.CERT_NO_MISMATCH
    unknown = person_input("ec" + "0" * 40, "", cert_type="01")
    assert await session.refused("1101", unknown) == errors.E_VOUCHER_INVALID
    try:
        app.issue_ec_token(population.examples().unknown.certno)
    except ValueError:
        pass
    else:
        raise AssertionError("a token was issued for someone the platform does not know")


async def test_e_voucher_tokens_expire(
    pki: DevPki, population: Population, client: httpx.AsyncClient, envelope: EnvelopeFactory
) -> None:
    now = [dt.datetime.now(BEIJING)]
    app = PlatformSimulator(population, clock=lambda: now[0])
    async with running_simulator(app, pki=pki) as simulator:
        session = Session(client, simulator, envelope)
        await session.sign_in()
        employee = population.examples().employee
        payload = person_input(app.issue_ec_token(employee.certno), "", cert_type="01")
        payload["data"]["certno"] = ""
        assert (await session.ok("1101", payload))["baseinfo"]["psn_no"] == employee.psn_no
        now[0] += dt.timedelta(minutes=6)
        refused = await session.refused("1101", payload)
        assert refused == errors.E_VOUCHER_INVALID


async def test_person_info_by_social_security_card(
    session: Session, population: Population
) -> None:
    employee = population.examples().employee
    payload = person_input(employee.certno, employee.psn_name, cert_type="03")
    payload["data"]["card_sn"] = card_sn(employee.certno, employee.insuplc_admdvs)
    assert len(payload["data"]["card_sn"]) == 32
    assert (await session.ok("1101", payload))["baseinfo"]["psn_no"] == employee.psn_no
    payload["data"]["card_sn"] = card_sn(population.examples().resident.certno, "510100")
    assert await session.refused("1101", payload) == errors.CARD_SN_MISMATCH


# -- 2001 ----------------------------------------------------------------------------------------


def benefit_input(person: Person, insutype: str, begntime: str, med_type: str = "11") -> Any:
    return {
        "data": {
            "psn_no": person.psn_no,
            "insutype": insutype,
            "fixmedins_code": "H44030500001",
            "med_type": med_type,
            "begntime": begntime,
            "endtime": "",
        }
    }


async def test_benefit_check(session: Session, population: Population) -> None:
    examples = population.examples()
    enjoys = (await session.ok("2001", benefit_input(examples.employee, "310", now_text())))[
        "trtinfo"
    ][0]
    assert enjoys["trt_enjymnt_flag"] == "1"
    assert enjoys["psn_no"] == examples.employee.psn_no
    assert enjoys["fund_pay_type"] == "310100"
    assert enjoys["begndate"] == examples.employee.insuinfo[0].psn_insu_date.isoformat()
    assert enjoys["enddate"] is None

    # Refused benefits are business answers: infcode 0, flag 0, and the reason.
    suspended = (await session.ok("2001", benefit_input(examples.suspended, "310", now_text())))[
        "trtinfo"
    ][0]
    assert (suspended["trt_enjymnt_flag"], suspended["trt_chk_rslt"]) == (
        "0",
        errors.BENEFIT_SUSPENDED,
    )
    assert suspended["enddate"] == examples.suspended.insuinfo[0].paus_insu_date.isoformat()
    early = (
        await session.ok("2001", benefit_input(examples.resident, "390", "2010-01-01 08:00:00"))
    )["trtinfo"][0]
    assert (early["trt_enjymnt_flag"], early["trt_chk_rslt"]) == (
        "0",
        errors.BENEFIT_BEFORE_ENROLMENT,
    )

    # Malformed questions are refusals.
    assert await session.refused(
        "2001", benefit_input(examples.employee, "390", now_text())
    ) == errors.INSUTYPE_NOT_ENROLLED.format(insutype="390")
    assert await session.refused(
        "2001", benefit_input(examples.employee, "310", now_text(), med_type="99")
    ) == errors.MED_TYPE_INVALID.format(value="99")
    unknown = benefit_input(examples.employee, "310", now_text())
    unknown["data"]["psn_no"] = "9" * 30
    assert await session.refused("2001", unknown) == errors.PSN_NO_NOT_FOUND


# -- 2501 / 2502 / 5304 / 5302 -------------------------------------------------------------------


def offsite_input(person: Person, area: str, begndate: str, enddate: str, **extra: str) -> Any:
    return {
        "refmedin": {
            "psn_no": person.psn_no,
            "insutype": person.insuinfo[0].insutype,
            "tel": "13800000000",
            "addr": "北京市朝阳区某街道1号",
            "insu_optins": person.insuplc_admdvs,
            "diag_code": "",
            "diag_name": "",
            "dise_cond_dscr": "",
            "reflin_medins_no": "",
            "reflin_medins_name": "",
            "mdtrtarea_admdvs": area,
            "hosp_agre_refl_flag": "",
            "refl_type": "",
            "refl_date": "",
            "refl_rea": "异地长期居住",
            "refl_opnn": "",
            "begndate": begndate,
            "enddate": enddate,
            **extra,
        }
    }


async def test_offsite_registration_register_list_cancel(
    session: Session, population: Population
) -> None:
    employee = population.examples().employee  # insured in 310000 (上海)
    first = await session.ok(
        "2501",
        offsite_input(employee, "110000", "2026-01-01", "2026-12-31",
                      reflin_medins_no="H11010500001", reflin_medins_name="北京市某医院"),
    )  # fmt: skip
    serial = first["result"]["trt_dcla_detl_sn"]
    assert len(serial) == 30

    listed = (await session.ok("5304", {"data": {"psn_no": employee.psn_no}}))["refmedin"]
    assert [(r["trt_dcla_detl_sn"], r["vali_flag"]) for r in listed] == [(serial, "1")]
    assert (listed[0]["mdtrtarea_admdvs"], listed[0]["begndate"], listed[0]["enddate"]) == (
        "110000", "2026-01-01", "2026-12-31",
    )  # fmt: skip
    assert listed[0]["tel"] == "13800000000"

    designated = (await session.ok("5302", {"data": {"psn_no": employee.psn_no}}))["psnfixmedin"]
    assert [row["fixmedins_code"] for row in designated] == ["H44030500001", "H11010500001"]

    overlap = offsite_input(employee, "440100", "2026-06-01", "2027-05-31")
    assert await session.refused("2501", overlap) == errors.OFFSITE_OVERLAP.format(serial=serial)

    cancel = {"data": {"trt_dcla_detl_sn": serial, "psn_no": employee.psn_no, "memo": "返回"}}
    await session.ok("2502", cancel)
    listed = (await session.ok("5304", {"data": {"psn_no": employee.psn_no}}))["refmedin"]
    assert [r["vali_flag"] for r in listed] == ["0"]
    assert await session.refused("2502", cancel) == errors.OFFSITE_ALREADY_CANCELLED.format(
        serial=serial
    )
    # The cancelled period is free again.
    assert (await session.ok("2501", overlap))["result"]["trt_dcla_detl_sn"] != serial


async def test_offsite_registration_refusals(session: Session, population: Population) -> None:
    examples = population.examples()
    employee = examples.employee
    cases = [
        (offsite_input(employee, "110000", "2026-03-01", "2026-02-01"), errors.TIME_ORDER_INVALID),
        (offsite_input(employee, "310000", "2026-03-01", ""),
         errors.OFFSITE_SAME_AREA.format(code="310000")),
        (offsite_input(employee, "990000", "2026-03-01", ""),
         errors.OFFSITE_AREA_INVALID.format(code="990000")),
        (offsite_input(employee, "1100", "2026-03-01", ""),
         errors.FIELD_BAD_VALUE.format(field="mdtrtarea_admdvs")),
        (offsite_input(examples.suspended, "110000", "2026-03-01", ""), errors.BENEFIT_SUSPENDED),
        (offsite_input(employee, "110000", "2026/03/01", ""),
         errors.DATE_INVALID.format(field="begndate")),
    ]  # fmt: skip
    not_enrolled = offsite_input(employee, "110000", "2026-03-01", "")
    not_enrolled["refmedin"]["insutype"] = "390"
    cases.append((not_enrolled, errors.INSUTYPE_NOT_ENROLLED.format(insutype="390")))
    unknown = offsite_input(employee, "110000", "2026-03-01", "")
    unknown["refmedin"]["psn_no"] = "1" * 30
    cases.append((unknown, errors.PSN_NO_NOT_FOUND))
    for payload, expected in cases:
        assert await session.refused("2501", payload) == expected, payload
    missing = {"data": {"trt_dcla_detl_sn": "4403002026", "psn_no": employee.psn_no}}
    assert await session.refused("2502", missing) == errors.OFFSITE_NOT_FOUND.format(
        serial="4403002026"
    )


async def test_regional_code_variants_are_aliases(
    pki: DevPki, population: Population, client: httpx.AsyncClient, envelope: EnvelopeFactory
) -> None:
    app = PlatformSimulator(population, transactions=default_registry({"2501A": "2501"}))
    async with running_simulator(app, pki=pki) as simulator:
        session = Session(client, simulator, envelope)
        await session.sign_in()
        employee = population.examples().employee
        payload = offsite_input(employee, "110000", "2026-01-01", "", refl_old_mdtrt_id="X1")
        assert (await session.ok("2501A", payload))["result"]["trt_dcla_detl_sn"]
        assert simulator.app.calls.count("2501A") == 1


# -- 2201 / 2204 / 2206 / 2207 / 5206 / 5307 ----------------------------------------------------


ITEMS = [("XA01", "12.50", "2"), ("ZB02", "100.00", "1"), ("ZF03", "30.00", "1")]


async def test_settlement_chain_moves_balance_cumulative_and_ledger(
    session: Session, population: Population
) -> None:
    employee = population.examples().employee
    assert employee.psn_no is not None
    app: PlatformSimulator = session.simulator.app
    before_balance = await balance(session, employee)
    before_cum = await cumulative(session, employee)
    mdtrt_id, total = await open_visit(session, employee, ITEMS)
    assert total == Decimal("155.00")

    payload = settle_input(employee.psn_no, employee.certno, mdtrt_id, "155.00")
    pre = (await session.ok("2206", payload))["setlinfo"]
    assert pre["setl_id"] is None
    body = session.body("2207", payload)
    response = await session.post(body)
    answer = response.json()
    assert answer["infcode"] == 0, answer["err_msg"]
    setl = answer["output"]["setlinfo"]
    assert '"medfee_sumamt":155.00' in response.text  # exact, two decimals
    for field in ("fund_pay_sumamt", "acct_pay", "psn_cash_pay", "inscp_scp_amt", "balc"):
        assert money(setl[field]) == money(pre[field]), field

    # The figures follow the policy from this year's cumulative figures before the visit.
    row = employee.insuinfo[0]
    scheme = policy.scheme_for(row)
    expected = policy.settle(
        medfee_sumamt=15500, fulamt_ownpay_amt=3000, preselfpay_amt=1000, inscp_scp_amt=11500,
        scheme=scheme,
        deductible_used=int(before_cum[("310", "C001")] * 100),
        fund_paid=int(before_cum[("310", "C002")] * 100),
        balance=int(before_balance * 100), use_account=True,
    )  # fmt: skip
    assert money(setl["fund_pay_sumamt"]) * 100 == expected.fund_pay_sumamt
    assert money(setl["acct_pay"]) * 100 == expected.acct_pay
    assert money(setl["fund_pay_sumamt"]) + money(setl["acct_pay"]) + money(
        setl["psn_cash_pay"]
    ) == Decimal("155.00")
    assert money(setl["balc"]) == before_balance - money(setl["acct_pay"])
    assert setl["medins_setl_id"] == body["msgid"]
    assert len(setl["setl_id"]) == 30

    assert await balance(session, employee) == before_balance - money(setl["acct_pay"])
    after_cum = await cumulative(session, employee)
    assert after_cum[("310", "C003")] - before_cum[("310", "C003")] == Decimal("155.00")
    assert after_cum[("310", "C004")] - before_cum[("310", "C004")] == money(setl["acct_pay"])
    assert after_cum[("310", "C002")] - before_cum[("310", "C002")] == money(
        setl["fund_pay_sumamt"]
    )

    charges = app.ledger.charges(msgid=body["msgid"])
    assert [(c.setl_id, c.acct_pay, c.medfee_sumamt) for c in charges] == [
        (setl["setl_id"], expected.acct_pay, 15500)
    ]
    statement = await session.ok("5307", {"data": {"psn_no": employee.psn_no}})
    assert statement["data"]["total"] == 1
    entry = statement["acctdetl"][0]
    assert (entry["chg_type"], money(entry["chg_amt"]), entry["setl_id"]) == (
        "01", -money(setl["acct_pay"]), setl["setl_id"],
    )  # fmt: skip
    assert money(entry["aft_balc"]) == money(setl["balc"])

    # The visit is settled: no second settlement, no more fees.
    assert await session.refused("2207", payload) == errors.VISIT_SETTLED
    late = fee_item(mdtrt_id, employee.psn_no, "F9999", pric="1.00")
    assert await session.refused("2204", {"feedetail": [late]}) == errors.VISIT_SETTLED


async def test_settlement_refusals(session: Session, population: Population) -> None:
    employee = population.examples().employee
    assert employee.psn_no is not None
    mdtrt_id, _ = await open_visit(session, employee, ITEMS)
    wrong_total = settle_input(employee.psn_no, employee.certno, mdtrt_id, "150.00")
    assert await session.refused("2207", wrong_total) == errors.MEDFEE_MISMATCH.format(
        given="150.00", uploaded="155.00"
    )
    bad_amount = fee_item(mdtrt_id, employee.psn_no, "F0100", pric="3.00", cnt="2", amount="7.00")
    assert await session.refused("2204", {"feedetail": [bad_amount]}) == (
        errors.FEE_DETAIL_AMOUNT.format(sn="F0100")
    )
    duplicate = fee_item(mdtrt_id, employee.psn_no, "F0001", pric="1.00")
    assert await session.refused("2204", {"feedetail": [duplicate]}) == (
        errors.FEE_DETAIL_DUPLICATE.format(sn="F0001")
    )
    unknown_visit = settle_input(employee.psn_no, employee.certno, "4403" + "0" * 26, "1.00")
    assert await session.refused("2207", unknown_visit) == errors.VISIT_NOT_FOUND.format(
        mdtrt_id="4403" + "0" * 26
    )
    resident = population.examples().resident
    other_voucher = settle_input(employee.psn_no, resident.certno, mdtrt_id, "155.00")
    assert await session.refused("2207", other_voucher) == errors.VOUCHER_PERSON_MISMATCH
    suspended = population.examples().suspended
    assert suspended.psn_no is not None
    assert (
        await session.refused("2201", register_input(suspended.psn_no, suspended.certno))
        == errors.BENEFIT_SUSPENDED
    )


async def test_resident_settlement_with_e_voucher_and_no_account(
    session: Session, population: Population
) -> None:
    resident = population.examples().resident
    assert resident.psn_no is not None
    token = session.simulator.app.issue_ec_token(resident.certno)
    visit = await session.ok(
        "2201", register_input(resident.psn_no, token, insutype="390", cert_type="01")
    )
    mdtrt_id = visit["data"]["mdtrt_id"]
    item = fee_item(mdtrt_id, resident.psn_no, "F0001", pric="80.00")
    await session.ok("2204", {"feedetail": [item]})
    payload = settle_input(
        resident.psn_no, token, mdtrt_id, "80.00", insutype="390", cert_type="01"
    )
    setl = (await session.ok("2207", payload))["setlinfo"]
    assert money(setl["acct_pay"]) == 0  # residents have no personal account
    assert money(setl["fund_pay_sumamt"]) + money(setl["psn_cash_pay"]) == Decimal("80.00")


# -- 2208 / 2601 ---------------------------------------------------------------------------------


async def settle_once(session: Session, person: Person) -> tuple[dict[str, Any], dict[str, Any]]:
    """A visit settled with the account: the request body and its setlinfo."""
    assert person.psn_no is not None
    mdtrt_id, total = await open_visit(session, person, ITEMS)
    body = session.body("2207", settle_input(person.psn_no, person.certno, mdtrt_id, str(total)))
    answer = (await session.post(body)).json()
    assert answer["infcode"] == 0, answer["err_msg"]
    return body, answer["output"]["setlinfo"]


async def test_cancellation_restores_balance_and_cumulative(
    session: Session, population: Population
) -> None:
    employee = population.examples().employee
    app: PlatformSimulator = session.simulator.app
    before = await balance(session, employee)
    before_cum = await cumulative(session, employee)
    _, setl = await settle_once(session, employee)
    assert await balance(session, employee) < before
    cancel = {"data": {"setl_id": setl["setl_id"], "mdtrt_id": setl["mdtrt_id"],
                       "psn_no": employee.psn_no}}  # fmt: skip
    undone = (await session.ok("2208", cancel))["setlinfo"]
    assert money(undone["acct_pay"]) == -money(setl["acct_pay"])
    assert money(undone["balc"]) == before
    assert await balance(session, employee) == before
    assert await cumulative(session, employee) == before_cum
    assert app.ledger.active_charges() == []
    assert [e.kind for e in app.ledger.entries] == [EntryKind.CHARGE, EntryKind.CANCELLATION]
    assert await session.refused("2208", cancel) == errors.SETTLEMENT_CANCELLED.format(
        setl_id=setl["setl_id"]
    )
    mismatched = {"data": {**cancel["data"], "psn_no": "1" * 30}}
    assert await session.refused("2208", mismatched) == errors.SETTLEMENT_MISMATCH
    # The reopened visit can be settled again.
    payload = settle_input(employee.psn_no or "", employee.certno, setl["mdtrt_id"], "155.00")
    assert (await session.ok("2207", payload))["setlinfo"]["setl_id"] != setl["setl_id"]


async def test_reversal_by_original_msgid(session: Session, population: Population) -> None:
    employee = population.examples().employee
    app: PlatformSimulator = session.simulator.app
    before = await balance(session, employee)
    body, setl = await settle_once(session, employee)
    reverse = {"data": {"psn_no": employee.psn_no, "omsgid": body["msgid"], "oinfno": "2207"}}
    wrong_code = {"data": {**reverse["data"], "oinfno": "2206"}}
    assert await session.refused("2601", wrong_code) == errors.REVERSAL_INFNO_MISMATCH
    output = (await session.ok("2601", reverse))["data"]
    assert (output["setl_id"], money(output["balc"])) == (setl["setl_id"], before)
    assert await balance(session, employee) == before
    assert [e.kind for e in app.ledger.entries] == [EntryKind.CHARGE, EntryKind.REVERSAL]
    assert await session.refused("2601", reverse) == errors.REVERSAL_ALREADY

    never_sent = {"data": {**reverse["data"], "omsgid": "H44030500001202601010000009999"}}
    assert await session.refused("2601", never_sent) == errors.REVERSAL_NOT_FOUND


# -- second confirmation, statement paging --------------------------------------------------------


async def test_second_confirmation_switch(session: Session, population: Population) -> None:
    employee = population.examples().employee
    assert employee.psn_no is not None
    app: PlatformSimulator = session.simulator.app
    app.confirmation.require("sms_code")
    mdtrt_id, total = await open_visit(session, employee, ITEMS)
    payload = settle_input(employee.psn_no, employee.certno, mdtrt_id, str(total))
    assert await session.refused("2207", payload) == errors.CONFIRMATION_REQUIRED.format(
        field="sms_code"
    )
    expected = app.confirmation.expected(employee.psn_no, mdtrt_id)
    wrong = str((int(expected) + 1) % 1_000_000).zfill(6)
    payload["data"]["sms_code"] = wrong
    assert await session.refused("2207", payload) == errors.CONFIRMATION_WRONG
    payload["data"]["sms_code"] = expected
    assert (await session.ok("2207", payload))["setlinfo"]["setl_id"]
    assert len(app.ledger.charges()) == 1


async def test_account_statement_pages(session: Session, population: Population) -> None:
    employee = population.examples().employee
    setl_ids = [(await settle_once(session, employee))[1]["setl_id"] for _ in range(3)]
    query = {"data": {"psn_no": employee.psn_no, "page_num": 2, "page_size": 2}}
    page = await session.ok("5307", query)
    assert page["data"]["total"] == 3
    assert [row["setl_id"] for row in page["acctdetl"]] == setl_ids[2:]
    first = await session.ok("5307", {"data": {"psn_no": employee.psn_no, "page_size": "2"}})
    assert [row["setl_id"] for row in first["acctdetl"]] == setl_ids[:2]
    later = now_text(dt.timedelta(days=1))
    empty = await session.ok("5307", {"data": {"psn_no": employee.psn_no, "begntime": later}})
    assert (empty["data"]["total"], empty["acctdetl"]) == (0, [])


async def test_cumulative_figures_have_a_reproducible_seeded_history(
    session: Session, population: Population
) -> None:
    employee = population.examples().employee
    last_year = dt.datetime.now(BEIJING).year - 1
    query = {"data": {"psn_no": employee.psn_no, "cum_ym": f"{last_year}12"}}
    rows = (await session.ok("5206", query))["cuminfo"]
    assert [(r["insutype"], r["cum_type_code"]) for r in rows] == [
        ("310", "C001"), ("310", "C002"), ("310", "C003"), ("310", "C004"),
    ]  # fmt: skip
    assert {r["year"] for r in rows} == {str(last_year)}
    figures = {r["cum_type_code"]: money(r["cum"]) for r in rows}
    assert figures["C001"] <= Decimal("200.00")  # the in-service deductible
    assert figures["C002"] <= figures["C003"]
    # The same seed gives the same history in another simulator.
    other = PlatformSimulator(population)
    assert other.state.cumulative.through(employee.psn_no or "", last_year, 12) == (
        session.simulator.app.state.cumulative.through(employee.psn_no or "", last_year, 12)
    )
    assert await session.refused(
        "5206", {"data": {"psn_no": employee.psn_no, "cum_ym": "202613"}}
    ) == errors.DATE_INVALID.format(field="cum_ym")
