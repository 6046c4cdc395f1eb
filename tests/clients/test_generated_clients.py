"""Other languages generate clients from proto/ as docs/api.md section 8 says: the file options
are set and consistent; the documented protoc commands generate Go (messages and gRPC stubs) and
Java (one class per message); the Java compiles with javac and round-trips a request that the
Python stubs read back byte for byte.

The toolchain is Debian's (`scripts/bootstrap.sh` installs protobuf-compiler, protoc-gen-go,
protoc-gen-go-grpc, libprotobuf-java and a JDK): generated Java needs the protobuf-java runtime of
its protoc's version, and Debian ships the pair (grpcio-tools' bundled protoc has no Java
generator).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2, consent_pb2, gateway_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
API_DOC = ROOT / "docs" / "api.md"
PROTOBUF_JAR = Path("/usr/share/java/protobuf.jar")
JAVA_PACKAGE = "com.yibao.gateway.v1"
TOOLS = ("protoc", "protoc-gen-go", "protoc-gen-go-grpc", "javac", "java")

ROUND_TRIP = """
import com.yibao.gateway.v1.*;
import java.util.Base64;

public class RoundTrip {
  public static void main(String[] args) throws Exception {
    GetEnrollmentRequest request = GetEnrollmentRequest.newBuilder()
        .setSubject(DataSubject.newBuilder()
            .setCertificateType(CertificateType.CERTIFICATE_TYPE_RESIDENT_ID_CARD)
            .setCertificateNumber("11010519491231002X")
            .setName("\\u5f20\\u4e09"))
        .build();
    com.google.protobuf.Descriptors.MethodDescriptor method = GatewayProto.getDescriptor()
        .findServiceByName("InsuranceGateway").findMethodByName("GetEnrollment");
    Purpose purpose = method.getOptions().getExtension(GatewayProto.requiredPurpose);
    System.out.println(Base64.getEncoder().encodeToString(request.toByteArray()));
    System.out.println(purpose.name());
  }
}
"""


def documented_commands() -> str:
    text = API_DOC.read_text()
    section = text[text.index("## 8. Generating clients") :]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return block


def generate(workdir: Path, proto: Path = PROTO) -> subprocess.CompletedProcess[str]:
    """Run the documented commands in ``workdir`` holding a copy of ``proto``."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {missing}: run scripts/bootstrap.sh (Debian packages)"
    shutil.copytree(proto, workdir / "proto")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_commands()],
        cwd=workdir,
        capture_output=True,
        text=True,
    )


def test_every_file_names_its_go_and_java_packages() -> None:
    for module in (common_pb2, consent_pb2, gateway_pb2):
        options = module.DESCRIPTOR.GetOptions()
        assert options.go_package == "yibao/gateway/v1;gatewayv1", module.DESCRIPTOR.name
        assert options.java_package == JAVA_PACKAGE
        assert options.java_multiple_files
        assert options.java_outer_classname.endswith("Proto")


def test_the_documented_commands_generate_go_and_java(tmp_path: Path) -> None:
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    go = tmp_path / "gen" / "go" / "gateway" / "v1"
    for name in ("common.pb.go", "consent.pb.go", "gateway.pb.go"):
        assert re.search(r"^package gatewayv1$", (go / name).read_text(), re.MULTILINE), name
    assert "type InsuranceGatewayClient interface" in (go / "gateway_grpc.pb.go").read_text()
    assert "type ConsentServiceClient interface" in (go / "consent_grpc.pb.go").read_text()
    java = tmp_path / "gen" / "java" / JAVA_PACKAGE.replace(".", "/")
    for name in ("GetEnrollmentRequest", "SettleWithEVoucherRequest", "Consent", "GatewayProto"):
        assert (java / f"{name}.java").is_file(), name


def test_without_go_package_go_cannot_be_generated(tmp_path: Path) -> None:
    """The check can fail: the same commands on protos without the option stop."""
    bare = tmp_path / "bare"
    shutil.copytree(PROTO, bare)
    for path in bare.rglob("*.proto"):
        path.write_text(re.sub(r"^option go_package = .*\n", "", path.read_text(), flags=re.M))
    result = generate(tmp_path / "work", bare)
    assert result.returncode != 0
    assert "go_package" in result.stderr or "Go import path" in result.stderr


@pytest.mark.slow
def test_generated_java_compiles_and_round_trips_a_request(tmp_path: Path) -> None:
    assert PROTOBUF_JAR.is_file(), "missing libprotobuf-java: run scripts/bootstrap.sh"
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    source, classes = tmp_path / "gen" / "java", tmp_path / "classes"
    classes.mkdir()
    (source / "RoundTrip.java").write_text(ROUND_TRIP)
    files = [str(p) for p in source.rglob("*.java")]
    compiled = subprocess.run(
        ["javac", "-nowarn", "-d", str(classes), "-cp", str(PROTOBUF_JAR), *files],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = subprocess.run(
        ["java", "-cp", f"{classes}:{PROTOBUF_JAR}", "RoundTrip"],
        capture_output=True,
        text=True,
        check=True,
    )
    encoded, purpose = ran.stdout.split()
    request = gateway_pb2.GetEnrollmentRequest.FromString(base64.b64decode(encoded))
    assert request.subject.name == "张三"
    assert request.subject.certificate_number == "11010519491231002X"
    assert request.subject.certificate_type == common_pb2.CERTIFICATE_TYPE_RESIDENT_ID_CARD
    assert purpose == "PURPOSE_ENROLLMENT_QUERY"
