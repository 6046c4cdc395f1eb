"""CheckEligibility: may the person receive benefits (待遇资格)? Not eligible is an answer.

python examples/eligibility.py --certno 11010519491231002X --name 张三 --date 2026-12-07
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from _args import client_of, parse, parser, subject_of

from yibao_client import Client
from yibao_client.v1 import common, gateway


def check(
    client: Client, subject: common.DataSubject, begin: dt.date
) -> gateway.CheckEligibilityResponse:
    return client.check_eligibility(
        gateway.CheckEligibilityRequest(
            subject=subject,
            insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
            medical_type_code="11",  # general outpatient
            begin_date=begin.isoformat(),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    # The contract's dates are Beijing dates, whatever the host's time zone.
    today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    arguments.add_argument("--date", type=dt.date.fromisoformat, default=today)
    args = parse(arguments, argv)
    with client_of(args) as client:
        answer = check(client, subject_of(args), args.date)
    print("eligible" if answer.eligible else f"not eligible: {answer.refusal_reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
