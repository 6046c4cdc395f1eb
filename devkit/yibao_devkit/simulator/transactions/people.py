"""Finding the person a request is about: by visit voucher (就诊凭证) or by person number.

Vouchers (``mdtrt_cert_type``): 01 the e-voucher token (ecToken) a QR-code scan yields, 02 the
resident ID card (the number is the resident ID), 03 the social-security card (the number is the
resident ID, and ``card_sn`` must identify the card issued to it).
"""

from __future__ import annotations

import datetime as dt

from yibao_devkit.simulator import cards, errors
from yibao_devkit.simulator.ids import check_resident_id
from yibao_devkit.simulator.population import STAS_NORMAL, STAS_SUSPENDED, Enrollment, Person
from yibao_devkit.simulator.transactions.registry import TransactionContext

CERT_EC_TOKEN = "01"  # noqa: S105 - a voucher type code, not a secret
CERT_ID_CARD = "02"
CERT_SOCIAL_SECURITY_CARD = "03"
CERT_TYPES = frozenset({CERT_EC_TOKEN, CERT_ID_CARD, CERT_SOCIAL_SECURITY_CARD})


def by_voucher(ctx: TransactionContext, cert_type: str, cert_no: str, card_sn: str) -> Person:
    """The enrolled person the voucher names, or a refusal saying why not."""
    if cert_type not in CERT_TYPES:
        raise errors.Refusal(errors.MDTRT_CERT_TYPE_INVALID.format(value=cert_type))
    if cert_type == CERT_EC_TOKEN:
        certno = ctx.state.ec_tokens.resolve(cert_no, ctx.now)
        if certno is None:
            raise errors.Refusal(errors.E_VOUCHER_INVALID)
    else:
        certno = cert_no
        if check_resident_id(certno, today=ctx.now.date()) is not None:
            raise errors.Refusal(errors.CERT_NO_INVALID)
    person = ctx.state.population.find(certno)
    if person is None or person.psn_no is None:
        raise errors.Refusal(errors.PERSON_NOT_FOUND)
    if cert_type == CERT_SOCIAL_SECURITY_CARD:
        if not card_sn:
            raise errors.Refusal(errors.CARD_SN_MISSING)
        if card_sn != cards.card_sn(person.certno, person.insuplc_admdvs):
            raise errors.Refusal(errors.CARD_SN_MISMATCH)
    return person


def by_psn_no(ctx: TransactionContext, psn_no: str) -> Person:
    """The enrolled person with this platform person number, or a refusal."""
    person = ctx.state.population.find_psn_no(psn_no)
    if person is None:
        raise errors.Refusal(errors.PSN_NO_NOT_FOUND)
    return person


def enrollment(person: Person, insutype: str) -> Enrollment:
    """The person's enrolment in ``insutype``, or a refusal."""
    for row in person.insuinfo:
        if row.insutype == insutype:
            return row
    raise errors.Refusal(errors.INSUTYPE_NOT_ENROLLED.format(insutype=insutype))


def entitlement_problem(row: Enrollment, on: dt.date) -> str | None:
    """Why the enrolment gives no benefits on ``on`` (a 2001 ``trt_chk_rslt``), or ``None``."""
    if row.psn_insu_stas == STAS_SUSPENDED:
        return errors.BENEFIT_SUSPENDED
    if row.psn_insu_stas != STAS_NORMAL:
        return errors.BENEFIT_TERMINATED
    if on < row.psn_insu_date:
        return errors.BENEFIT_BEFORE_ENROLMENT
    if row.paus_insu_date is not None and on >= row.paus_insu_date:
        return errors.BENEFIT_AFTER_PAUSE
    return None
