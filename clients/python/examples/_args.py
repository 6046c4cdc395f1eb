"""What every example takes on its command line: where the sidecar is, who calls, about whom."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from yibao_client import Client, connect_unix
from yibao_client.v1 import common


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--socket", default="/run/yibao/sidecar.sock", help="sidecar's socket")
    parser.add_argument("--tenant", default="acme-corp", help="x-yibao-tenant")
    parser.add_argument("--operator", default="E10023", help="x-yibao-operator (a handle)")
    parser.add_argument("--certno", required=True, help="resident ID number of the data subject")
    parser.add_argument("--name", required=True, help="the data subject's name")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    return parser.parse_args(argv)


def client_of(args: argparse.Namespace) -> Client:
    return connect_unix(args.socket, tenant=args.tenant, operator=args.operator)


def subject_of(args: argparse.Namespace) -> common.DataSubject:
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number=args.certno,
        name=args.name,
    )
