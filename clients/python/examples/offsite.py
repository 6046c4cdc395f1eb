"""Offsite registration (异地就医备案): submit one, list them, cancel it.

    python examples/offsite.py --certno 11010519491231002X --name 张三 --target 310115

A mutating call takes a request_id chosen once per user action: the kit repeats a call that
failed in a retry-safe way with the same request, so the same key, and never acts twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from _args import client_of, parse, parser, subject_of

from yibao_client import Client
from yibao_client.v1 import common, gateway


def submit(
    client: Client, subject: common.DataSubject, target: str, start: dt.date
) -> gateway.OffsiteRegistration:
    answer = client.submit_offsite_registration(
        gateway.SubmitOffsiteRegistrationRequest(
            request_id=uuid.uuid4().hex,
            subject=subject,
            insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
            target_division_code=target,
            start_date=start.isoformat(),
            end_date=(start + dt.timedelta(days=90)).isoformat(),
            reason=gateway.OFFSITE_REASON_RESIDENT_WORKING_ELSEWHERE,
            contact_phone="13912345678",
            address="上海市浦东新区世纪大道1号",
        )
    )
    return answer.registration


def registrations(client: Client, subject: common.DataSubject) -> list[gateway.OffsiteRegistration]:
    answer = client.list_offsite_registrations(
        gateway.ListOffsiteRegistrationsRequest(subject=subject)
    )
    return list(answer.registrations)


def cancel(
    client: Client, subject: common.DataSubject, registration_id: str
) -> gateway.OffsiteRegistration:
    answer = client.cancel_offsite_registration(
        gateway.CancelOffsiteRegistrationRequest(
            request_id=uuid.uuid4().hex,
            subject=subject,
            registration_id=registration_id,
            reason="计划变更",
        )
    )
    return answer.registration


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--target", default="310115", help="six-digit division code")
    arguments.add_argument("--cancel", action="store_true", help="cancel it again at the end")
    args = parse(arguments, argv)
    today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()  # a Beijing date
    with client_of(args) as client:
        made = submit(client, subject_of(args), args.target, today)
        state = gateway.OffsiteRegistrationState.Name(made.state)
        print("registered", made.registration_id, state)
        for item in registrations(client, subject_of(args)):
            print("  ", item.registration_id, gateway.OffsiteRegistrationState.Name(item.state))
        if args.cancel:
            cancelled = cancel(client, subject_of(args), made.registration_id)
            print("cancelled", gateway.OffsiteRegistrationState.Name(cancelled.state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
