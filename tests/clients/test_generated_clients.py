"""Other languages can generate clients from proto/: the file options are set and consistent;
Java generates with protoc's built-in generator (one class per message), compiles with javac, and
round-trips a request that the Python stubs read back byte for byte.

The toolchain is Debian's (`scripts/bootstrap.sh` installs protobuf-compiler, libprotobuf-java
and a JDK): generated Java needs the protobuf-java runtime of its protoc's version, and Debian
ships the pair (grpcio-tools' bundled protoc has no Java generator). The well-known imports
(timestamp, descriptor) come from grpcio-tools.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import grpc_tools
import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2, consent_pb2, gateway_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
PROTOBUF_JAR = Path("/usr/share/java/protobuf.jar")
JAVA_PACKAGE = "com.yibao.gateway.v1"

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
    Purpose purpose = InsuranceGateway_descriptor_purpose();
    System.out.println(Base64.getEncoder().encodeToString(request.toByteArray()));
    System.out.println(purpose.name());
  }

  static Purpose InsuranceGateway_descriptor_purpose() {
    com.google.protobuf.Descriptors.MethodDescriptor method = GatewayProto.getDescriptor()
        .findServiceByName("InsuranceGateway").findMethodByName("GetEnrollment");
    return method.getOptions().getExtension(GatewayProto.requiredPurpose);
  }
}
"""


def protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def test_every_file_names_its_go_and_java_packages() -> None:
    for module in (common_pb2, consent_pb2, gateway_pb2):
        options = module.DESCRIPTOR.GetOptions()
        assert options.go_package == "yibao/gateway/v1;gatewayv1", module.DESCRIPTOR.name
        assert options.java_package == JAVA_PACKAGE
        assert options.java_multiple_files
        assert options.java_outer_classname.endswith("Proto")


@pytest.mark.slow
def test_generated_java_compiles_and_round_trips_a_request(tmp_path: Path) -> None:
    tools = {tool: shutil.which(tool) for tool in ("protoc", "javac", "java")}
    missing = [tool for tool, path in tools.items() if path is None]
    assert not missing and PROTOBUF_JAR.is_file(), (
        f"missing {missing or PROTOBUF_JAR}: run scripts/bootstrap.sh (Debian protobuf-compiler, "
        "libprotobuf-java, default-jdk-headless)"
    )
    source, classes = tmp_path / "src", tmp_path / "classes"
    source.mkdir()
    classes.mkdir()
    subprocess.run(
        [
            "protoc",
            f"--proto_path={PROTO}",
            f"--proto_path={WELL_KNOWN}",
            f"--java_out={source}",
            *protos(),
        ],
        cwd=PROTO,
        check=True,
    )
    package = source / JAVA_PACKAGE.replace(".", "/")
    for name in ("GetEnrollmentRequest", "SettleWithEVoucherRequest", "Consent", "GatewayProto"):
        assert (package / f"{name}.java").is_file(), name  # java_multiple_files, the package
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
