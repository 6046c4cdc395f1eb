"""GetEnrollment: a person's basic data and enrollments (参保信息查询).

python examples/enrollment.py --certno 11010519491231002X --name 张三
"""

from __future__ import annotations

from collections.abc import Sequence

from _args import client_of, parse, parser, subject_of

from yibao_client import Client, ConsentRequired, NotFound
from yibao_client.v1 import common, gateway


def enrollments(client: Client, subject: common.DataSubject) -> gateway.GetEnrollmentResponse:
    return client.get_enrollment(gateway.GetEnrollmentRequest(subject=subject), timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    with client_of(args) as client:
        try:
            answer = enrollments(client, subject_of(args))
        except ConsentRequired as error:
            print("no consent yet for", error.metadata["purpose"], "- run examples/consent.py")
            return 1
        except NotFound:
            print("the platform knows no such person")
            return 1
    print(answer.person.name, answer.person.birth_date)
    for row in answer.enrollments:
        # Show the raw code when the enum does not know it (docs/api.md, "Platform codes").
        kind = common.InsuranceType.Name(row.insurance_type)
        print(f"  {kind} ({row.insurance_type_code}) {row.status_code} since {row.enrollment_date}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
