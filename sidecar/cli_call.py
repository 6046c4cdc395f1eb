"""``yibao-sidecar call METHOD --json '{...}'``: call one RPC of a running sidecar from a shell.

The request and the answer are the proto's JSON mapping with the proto's field names
(``{"subject": {"certificate_type": "CERTIFICATE_TYPE_RESIDENT_ID_CARD", ...}}``). The message
types come from the sidecar itself through gRPC server reflection, so the command speaks the
contract of the sidecar it talks to; a server without reflection is called with the contract
compiled into this installation. ``--list`` names every method.

Over the Unix socket (``--socket``, else the ``[server] socket_path`` of ``--config``, else
``/run/yibao/sidecar.sock``) or mutual TLS over TCP (``--target`` with ``--ca``, ``--cert``,
``--key``). ``--tenant`` and ``--operator`` become the ``x-yibao-tenant`` and
``x-yibao-operator`` metadata.

Output on standard output, UTF-8 JSON (Chinese as is, never ``\\u`` escapes): the answer, or on
a failed call the status with every detail (ErrorInfo, BadRequest field violations, RetryInfo).
Exit codes: 0 answered; 1 the call failed (one line on standard error: status, reason,
message); 2 bad usage: unknown method, bad JSON, unknown field, bad configuration (one line).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from sidecar.config import ConfigError, load

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_SOCKET = "/run/yibao/sidecar.sock"
DEFAULT_TIMEOUT_SECONDS = 30.0
SETTLEMENT_TIMEOUT_SECONDS = 90.0  # docs/api.md: a settlement is a chain of transactions
DETAILS_KEY = "grpc-status-details-bin"
# The rich error details the sidecar sends, registered for JSON printing of google.rpc.Status.
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)


class UsageError(Exception):
    """Bad usage: one line for standard error, exit code 2."""


class CallFailed(Exception):
    """The connection or a reflection call failed: one line for standard error, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on standard error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        _one_line(f"{message} (see --help)")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="yibao-sidecar call",
        description="Call one RPC of a running sidecar with a JSON request; print the answer.",
    )
    parser.add_argument(
        "method",
        nargs="?",
        help="GetEnrollment, InsuranceGateway.GetEnrollment or "
        "yibao.gateway.v1.InsuranceGateway/GetEnrollment",
    )
    parser.add_argument(
        "--json",
        default="{}",
        help="the request as JSON; @FILE reads it from a file, - from standard input",
    )
    parser.add_argument("--list", action="store_true", help="list the methods and exit")
    parser.add_argument("--tenant", default="", help="x-yibao-tenant metadata")
    parser.add_argument("--operator", default="", help="x-yibao-operator metadata")
    parser.add_argument("--traceparent", default="", help="W3C traceparent to continue")
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"deadline in seconds (default {DEFAULT_TIMEOUT_SECONDS:g}; "
        f"{SETTLEMENT_TIMEOUT_SECONDS:g} for SettleWithEVoucher)",
    )
    where = parser.add_argument_group("where the sidecar is")
    where.add_argument("--socket", help=f"Unix socket (default {DEFAULT_SOCKET})")
    where.add_argument("--config", type=Path, help="sidecar.toml: use its [server] socket_path")
    where.add_argument("--target", help="host:port of the mutual-TLS listener, instead of a socket")
    where.add_argument("--ca", type=Path, help="CA certificate (PEM) of the sidecar's server")
    where.add_argument("--cert", type=Path, help="client certificate (PEM)")
    where.add_argument("--key", type=Path, help="client key (PEM)")
    where.add_argument("--server-name", help="name to check in the server's certificate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.list and not args.method:
        _one_line("name a METHOD, or --list (see --help)")
        return EXIT_USAGE
    try:
        with _channel(args) as channel:
            contract = Contract.of(channel)
            if args.list:
                for line in contract.listing():
                    print(line)
                return EXIT_OK
            method = contract.method(args.method)
            request = contract.request(method, _request_text(args.json))
            return _call(channel, contract, method, request, args)
    except UsageError as exc:
        _one_line(str(exc))
        return EXIT_USAGE
    except CallFailed as exc:
        _one_line(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _one_line(text: str) -> None:
    print("yibao-sidecar call: " + " ".join(text.split()), file=sys.stderr)


def _request_text(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the request from {value[1:]}: {exc}") from None
    return value


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if args.target:
        missing = [flag for flag in ("ca", "cert", "key") if getattr(args, flag) is None]
        if missing:
            raise UsageError("--target needs " + ", ".join(f"--{m}" for m in missing))
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=args.ca.read_bytes(),
                private_key=args.key.read_bytes(),
                certificate_chain=args.cert.read_bytes(),
            )
        except OSError as exc:
            raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        return grpc.secure_channel(args.target, credentials, options=options)
    socket = args.socket
    if socket is None and args.config is not None:
        try:
            socket = str(load(args.config).server.socket_path)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return grpc.insecure_channel(f"unix:{socket or DEFAULT_SOCKET}")


@dataclass
class Contract:
    """The services and messages of the sidecar at hand: by reflection, else compiled in."""

    pool: descriptor_pool.DescriptorPool
    services: list[str]

    @classmethod
    def of(cls, channel: grpc.Channel) -> Contract:
        database = ProtoReflectionDescriptorDatabase(channel)
        try:
            services = list(database.get_services())
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                raise CallFailed(_rpc_failure_line(exc, "server reflection")) from None
            return cls._compiled()
        return cls(descriptor_pool.DescriptorPool(database), services)

    @classmethod
    def _compiled(cls) -> Contract:
        from sidecar._proto.yibao.gateway.v1 import consent_pb2, gateway_pb2

        services = [
            service.full_name
            for module in (gateway_pb2, consent_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()
        ]
        return cls(descriptor_pool.Default(), services)

    def _methods(self) -> Iterator[MethodDescriptor]:
        for name in sorted(self.services):
            try:
                service = self.pool.FindServiceByName(name)
            except KeyError:
                continue
            yield from service.methods

    def listing(self) -> list[str]:
        return [
            f"{m.containing_service.full_name}/{m.name}  "
            f"({m.input_type.name} -> {m.output_type.name})"
            for m in self._methods()
        ]

    def method(self, name: str) -> MethodDescriptor:
        wanted = name.strip().lstrip("/").replace("/", ".")
        found = [
            m
            for m in self._methods()
            if wanted in (m.full_name, f"{m.containing_service.name}.{m.name}", m.name)
        ]
        if len(found) != 1:
            problem = "is ambiguous" if found else "is not a method of this sidecar"
            raise UsageError(f"{name!r} {problem}; see --list")
        return found[0]

    def request(self, method: MethodDescriptor, text: str) -> Message:
        request = message_factory.GetMessageClass(method.input_type)()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError("--json is nested too deeply") from None
        if not isinstance(value, dict):
            raise UsageError(f"--json must be a JSON object ({method.input_type.name})")
        try:
            json_format.ParseDict(value, request, descriptor_pool=self.pool)
        except json_format.ParseError as exc:
            raise UsageError(f"--json does not fit {method.input_type.name}: {exc}") from None
        except RecursionError:
            raise UsageError("--json is nested too deeply") from None
        return request


def _call(
    channel: grpc.Channel,
    contract: Contract,
    method: MethodDescriptor,
    request: Message,
    args: argparse.Namespace,
) -> int:
    response_class = message_factory.GetMessageClass(method.output_type)
    stub = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    metadata = tuple(
        (key, value)
        for key, value in (
            ("x-yibao-tenant", args.tenant),
            ("x-yibao-operator", args.operator),
            ("traceparent", args.traceparent),
        )
        if value
    )
    timeout = args.timeout or (
        SETTLEMENT_TIMEOUT_SECONDS
        if method.name == "SettleWithEVoucher"
        else DEFAULT_TIMEOUT_SECONDS
    )
    try:
        answer = stub(request, timeout=timeout, metadata=metadata)
    except grpc.RpcError as exc:
        _print_json(_failure(exc))
        _one_line(_rpc_failure_line(exc, method.name))
        return EXIT_FAILED
    _print_json(
        json_format.MessageToDict(
            answer,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            descriptor_pool=contract.pool,
        )
    )
    return EXIT_OK


def _print_json(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    trailers = cast("Sequence[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a corrupt trailer: report the code and message without details
        return None
    return status


def _failure(error: grpc.RpcError) -> dict[str, Any]:
    """The status as JSON: code, message and every detail, unknown detail types included."""
    code: grpc.StatusCode = error.code()
    answer: dict[str, Any] = {
        "code": code.name,
        "code_number": code.value[0],
        "message": error.details() or "",
        "details": [],
    }
    status = _status_of(error)
    for detail in status.details if status is not None else ():
        try:
            shown = json_format.MessageToDict(detail, preserving_proto_field_name=True)
        except (TypeError, KeyError, json_format.Error):
            shown = {
                "@type": detail.type_url,
                "value_base64": base64.b64encode(detail.value).decode(),
            }
        answer["details"].append(shown)
    return answer


def _rpc_failure_line(error: grpc.RpcError, what: str) -> str:
    code: grpc.StatusCode = error.code()
    reason = ""
    status = _status_of(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = f" {info.reason}"
    return f"{what} failed: {code.name}{reason}: {error.details() or ''}"
