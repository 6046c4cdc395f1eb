"""GetAccount: balances, cumulative figures and the account statement, page by page.

python examples/account.py --certno 11010519491231002X --name 张三
"""

from __future__ import annotations

from collections.abc import Sequence

from _args import client_of, parse, parser, subject_of

from yibao_client import Client
from yibao_client.v1 import common, gateway


def statement(
    client: Client, subject: common.DataSubject, page_size: int = 20
) -> tuple[gateway.GetAccountResponse, list[gateway.StatementEntry]]:
    """The first answer (balances, figures) and every statement entry of all pages."""
    request = gateway.GetAccountRequest(subject=subject, page_size=page_size)
    first = answer = client.get_account(request)
    entries = list(answer.statement_entries)
    while answer.next_page_token:
        request.page_token = answer.next_page_token  # every other field stays the same
        answer = client.get_account(request)
        entries += answer.statement_entries
    return first, entries


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(parser(__doc__.splitlines()[0]), argv)
    with client_of(args) as client:
        first, entries = statement(client, subject_of(args))
    for balance in first.balances:
        print(f"{balance.insurance_type_code}: {balance.balance_fen / 100:.2f} 元")
    if not first.statement_available:
        print("this region offers no statement")
    for entry in entries:
        print(f"  {entry.entry_date} {entry.amount_fen:+d} 分 {entry.description}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
