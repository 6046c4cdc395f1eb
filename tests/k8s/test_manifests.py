"""Every rendering of the sidecar component validates offline and keeps its promises.

The component (k8s/components/sidecar) is rendered into the example StatefulSet by the dev and
prod overlays and into the example Deployment (k8s/examples/deployment-with-sidecar). The
promises are issue 7's: a native sidecar sharing the socket through an emptyDir, gRPC probes
with their own service names on a health port that carries nothing else, the restricted Pod
Security profile, requests and limits, secrets only as files, a configuration the sidecar
accepts, egress to four kinds of destination only, a PodDisruptionBudget and a termination grace
long enough for the drain.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidecar import config
from sidecar._proto.yibao.gateway.v1 import consent_pb2, gateway_pb2
from sidecar.access import policy
from sidecar.interceptors.access_control import rpc_names
from sidecar.serving import probes
from tests.k8s.conftest import DEPLOYMENT_EXAMPLE, SIDECAR, Rendered

# Native sidecars are GA from 1.33; the newest schemas the validator ships are checked too.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
IM_SHUTDOWN_BUDGET_SECONDS = 30
SIDECAR_CLOSE_BUDGET_SECONDS = 20  # sign-out of every operator, final audit checkpoint
# The Prometheus Operator's kinds: checked against their CRD schemas in test_monitoring.py.
OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_the_kubernetes_schemas(rendered: Rendered, version: str) -> None:
    assert rendered.objects
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{rendered.overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc}")


def test_the_configmap_is_a_configuration_the_sidecar_accepts(
    rendered: Rendered, tmp_path: Path
) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text(rendered.sidecar_toml, encoding="utf-8")
    env = {e["name"]: "0" for e in rendered.container(SIDECAR)["env"] if "valueFrom" in e}
    settings = config.load(path, environ=env)
    assert settings.server.health_listen is not None
    assert settings.server.tcp_listen is None  # the health port is the only TCP listener
    assert settings.hsm is not None
    assert settings.access is not None  # callers are identified and authorised in every overlay
    if rendered.overlay == "prod":  # spans and metrics leave the pod for the collector
        assert settings.telemetry.otlp.endpoint is not None


def test_the_sidecar_is_a_native_sidecar_sharing_the_socket_with_the_im_container(
    rendered: Rendered,
) -> None:
    init_names = [c["name"] for c in rendered.pod["initContainers"]]
    sidecar = rendered.container(SIDECAR)
    assert sidecar["restartPolicy"] == "Always"
    assert init_names[-1] == SIDECAR  # the one-shot init containers (PIN, token) finish first
    assert SIDECAR not in [c["name"] for c in rendered.pod["containers"]]
    socket = rendered.sidecar_config["server"]["socket_path"]
    sidecar_mount = rendered.mount_of(SIDECAR, socket)
    im_mount = rendered.mount_of(rendered.im, socket)
    assert sidecar_mount["name"] == im_mount["name"] == "yibao-socket"
    assert "emptyDir" in rendered.volume(sidecar_mount["name"])
    assert not sidecar_mount.get("readOnly") and not im_mount.get("readOnly")
    im = rendered.container(rendered.im)
    told = [e.get("value") for e in im.get("env", [])] + im.get("args", [])
    assert f"unix:{socket}" in told  # the IM container is told where the socket is


def test_probes_use_grpc_health_with_their_own_service_names_on_the_health_port(
    rendered: Rendered,
) -> None:
    sidecar = rendered.container(SIDECAR)
    port = int(rendered.sidecar_config["server"]["health_listen"].rpartition(":")[2])
    metrics = int(rendered.sidecar_config["telemetry"]["prometheus"]["listen"].rpartition(":")[2])
    # the health port and the Prometheus scrape port, nothing else
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {
        "health": port,
        "metrics": metrics,
    }
    expected = {
        "startupProbe": probes.STARTUP,
        "readinessProbe": probes.READINESS,
        "livenessProbe": probes.LIVENESS,
    }
    for probe, service in expected.items():
        grpc = sidecar[probe]["grpc"]
        assert grpc == {"port": port, "service": service}, probe
    # The startup probe allows a slow HSM login: at least two minutes before the kubelet gives up.
    startup = sidecar["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def _all_security_contexts(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [(c["name"], c.get("securityContext", {})) for c in rendered.all_containers()]


def test_the_pod_meets_the_restricted_pod_security_profile(rendered: Rendered) -> None:
    pod = rendered.pod
    assert pod["automountServiceAccountToken"] is False
    (account,) = rendered.of_kind("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    for container in rendered.all_containers():
        for port in container.get("ports", []):
            assert "hostPort" not in port, container["name"]
    (namespace,) = rendered.of_kind("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in rendered.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, volume
    for name, context in _all_security_contexts(rendered):
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("runAsNonRoot", True) is True, name
        assert rendered.user_of(name) != 0, name
        assert not context.get("privileged"), name
        assert context.get("capabilities") == {"drop": ["ALL"]}, name
        assert context.get("seccompProfile", {"type": "RuntimeDefault"}) == {
            "type": "RuntimeDefault"
        }, name


def test_the_im_container_runs_as_another_user_than_the_sidecar(rendered: Rendered) -> None:
    """The PIN copy is 0600 for the sidecar's user; the IM container must not be that user."""
    assert rendered.user_of(rendered.im) != rendered.user_of(SIDECAR)


def test_every_container_has_requests_and_limits(rendered: Rendered) -> None:
    for container in rendered.all_containers():
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) >= {"cpu", "memory"}, (container["name"], kind)


def _file_keys(section: dict[str, Any], prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            found |= _file_keys(value, f"{prefix}{key}.")
        elif key.endswith("_file"):
            found[prefix + key] = value
    return found


def test_secrets_reach_the_sidecar_only_as_files_from_secrets(rendered: Rendered) -> None:
    files = _file_keys(rendered.sidecar_config)
    assert "hsm.user_pin_file" in files
    if rendered.overlay == "prod":  # the TLS client key is in the HSM: no key file, no Secret
        assert "platform.client_key_file" not in files
        assert rendered.sidecar_config["platform"]["client_key"] == "token:tls"
    else:
        assert "platform.client_key_file" in files
    for key, path in files.items():
        mount = rendered.mount_of(SIDECAR, path)
        assert mount.get("readOnly") is True, key
        volume = rendered.volume(mount["name"])
        if key == "access.policy_file":
            assert "configMap" in volume  # not a secret; test_the_access_policy_... below
        elif key == "hsm.user_pin_file":
            # memory-backed copy made by the hsm-pin init container from the Secret
            assert volume["emptyDir"]["medium"] == "Memory"
            copier = rendered.container("hsm-pin")
            source = copier["command"][-2]
            assert copier["command"][-1] == path
            assert "secret" in rendered.volume(rendered.mount_of("hsm-pin", source)["name"])
            assert copier["command"][:3] == ["install", "-m", "0600"]
        else:
            assert "secret" in volume, key
    for container in rendered.all_containers():
        for env in container.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {}), (container["name"], env)
        assert "envFrom" not in container, container["name"]
    for secret_volume in (v for v in rendered.pod["volumes"] if "secret" in v):
        assert secret_volume["secret"]["defaultMode"] & 0o007 == 0, secret_volume["name"]
    assert not rendered.of_kind("Secret")  # secrets are created outside the repository


def test_configuration_comes_from_the_configmap(rendered: Rendered) -> None:
    sidecar = rendered.container(SIDECAR)
    config_path = sidecar["args"][sidecar["args"].index("--config") + 1]
    mount = rendered.mount_of(SIDECAR, config_path)
    name = rendered.volume(mount["name"])["configMap"]["name"]
    assert name == rendered.configmap("yibao-sidecar-config")["metadata"]["name"]
    assert os.path.basename(config_path) in rendered.configmap("yibao-sidecar-config")["data"]


EGRESS_PORTS = {
    "dev": [{9443}, {53}, {5432}, {4317, 4318}],
    "prod": [{443}, {53}, {5432}, {4317, 4318}, {8008}],  # prod adds the network HSM
    DEPLOYMENT_EXAMPLE: [{9443}, {53}, {5432}, {4317, 4318}],
}


def test_egress_goes_only_to_the_platform_dns_postgresql_telemetry_and_the_hsm(
    rendered: Rendered,
) -> None:
    (policy,) = rendered.of_kind("NetworkPolicy")
    spec = policy["spec"]
    labels = rendered.workload["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    assert "Egress" in spec["policyTypes"]
    for rule in spec["egress"]:
        assert rule.get("to"), f"an egress rule without destinations allows all: {rule}"
        assert rule.get("ports"), f"an egress rule without ports allows every port: {rule}"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert not peer["ipBlock"]["cidr"].endswith("/0"), peer
    ports = [{p["port"] for p in rule["ports"]} for rule in spec["egress"]]
    assert ports == EGRESS_PORTS[rendered.overlay]


# docs/operations.md: a TLS key lost for good restarts the sidecar within a minute of the first
# new handshake that failed (then the stop: the drain).
TLS_KEY_RESTART_SECONDS = 60


def test_a_tls_key_lost_for_good_restarts_the_sidecar_within_a_minute(
    rendered: Rendered, tmp_path: Path
) -> None:
    """Liveness turns NOT_SERVING once the key in the token has failed for
    ``tls_key_unusable_seconds``; the kubelet restarts after ``failureThreshold`` failed probes
    ``periodSeconds`` apart, the first within one period: at most the sum."""
    path = tmp_path / "sidecar.toml"
    path.write_text(rendered.sidecar_toml, encoding="utf-8")
    env = {e["name"]: "0" for e in rendered.container(SIDECAR)["env"] if "valueFrom" in e}
    server = config.load(path, environ=env).server
    liveness = rendered.container(SIDECAR)["livenessProbe"]
    worst = (
        server.tls_key_unusable_seconds + liveness["periodSeconds"] * liveness["failureThreshold"]
    )
    assert worst <= TLS_KEY_RESTART_SECONDS
    assert liveness["timeoutSeconds"] < liveness["periodSeconds"]


def test_a_disruption_budget_covers_the_pods(rendered: Rendered) -> None:
    budget = rendered.one("PodDisruptionBudget")["spec"]
    labels = rendered.workload["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable")


def test_termination_grace_covers_the_im_shutdown_the_drain_and_the_final_checkpoint(
    rendered: Rendered,
) -> None:
    drain = rendered.sidecar_config["server"]["grace_period_seconds"]
    needed = IM_SHUTDOWN_BUDGET_SECONDS + drain + SIDECAR_CLOSE_BUDGET_SECONDS
    assert rendered.pod["terminationGracePeriodSeconds"] >= needed


def test_msgid_slots_are_unique_per_replica_and_cover_the_replicas(rendered: Rendered) -> None:
    """A StatefulSet's slot is the ordinal; a Deployment's pods lease theirs from a shared store."""
    workload = rendered.workload
    env = {e["name"]: e for e in rendered.container(SIDECAR)["env"]}
    msgid = rendered.sidecar_config["platform"]["msgid"]
    if workload["kind"] == "StatefulSet":
        slot = env["YIBAO_SIDECAR__PLATFORM__MSGID__SLOT"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert slot == "metadata.labels['apps.kubernetes.io/pod-index']"
    else:  # no ordinal: a fixed slot would be the same in every replica
        assert "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT" not in env
        assert msgid["slot"] == "lease"
        assert rendered.sidecar_config["store"]["backend"] == "postgresql"  # shared by replicas
    assert workload["spec"]["replicas"] <= msgid["slots"]


def test_dev_initialises_a_softhsm_token_with_the_security_teams_tool(dev: Rendered) -> None:
    init = dev.container("softhsm-token")
    script = init["command"][-1]
    assert "yibao-hsm init-token" in script and "yibao-hsm keygen --purpose sign" in script
    # the audit trail's keys (docs/audit.md): checkpoint signatures, pseudonyms, data-key wrapping
    for purpose in ("kek", "audit", "pseudonym"):
        assert f"yibao-hsm keygen --purpose {purpose} " in script, purpose
    hsm = dev.sidecar_config["hsm"]
    assert "--token-label " + hsm["token_label"] in script
    assert "--user-pin-file " + hsm["user_pin_file"] in script
    # the SO PIN is never on a volume the sidecar mounts, and is deleted after use
    so_mount = dev.mount_of("softhsm-token", "/run/yibao-hsm-so/so.pin")
    assert so_mount["name"] not in {m["name"] for m in dev.container(SIDECAR)["volumeMounts"]}
    assert "rm -f /run/yibao-hsm-so/so.pin" in script
    tokens = {e["name"]: e["value"] for e in init["env"]}["SOFTHSM2_CONF"]
    assert {e["name"]: e.get("value") for e in dev.container(SIDECAR)["env"]}[
        "SOFTHSM2_CONF"
    ] == tokens


def test_prod_loads_the_vendor_library_from_the_security_teams_image(prod: Rendered) -> None:
    rendered = prod
    module = rendered.sidecar_config["hsm"]["module"]
    mount = rendered.mount_of(SIDECAR, module)
    assert mount["readOnly"] is True
    installer = rendered.container("hsm-client-install")
    assert mount["name"] in {m["name"] for m in installer["volumeMounts"]}
    assert rendered.sidecar_config["platform"]["security"]["scheme"] != "plain"


def test_the_access_policy_loads_and_admits_the_im_container_and_no_one_else(
    rendered: Rendered, tmp_path: Path
) -> None:
    path = rendered.sidecar_config["access"]["policy_file"]
    mount = rendered.mount_of(SIDECAR, path)
    name = rendered.volume(mount["name"])["configMap"]["name"]
    (configmap,) = [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == name]
    assert name == "yibao-access-policy"  # a stable name: edits reload, no restart (no hash)
    assert "subPath" not in mount  # a subPath mount would never see the update
    text = configmap["data"][os.path.basename(path)]
    (tmp_path / "access.toml").write_text(text, encoding="utf-8")
    services = [
        gateway_pb2.DESCRIPTOR.services_by_name["InsuranceGateway"].full_name,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
    ]
    loaded = policy.load(tmp_path / "access.toml", rpc_names(services))
    uids = {uid for rule in config_callers(text) for uid in rule.get("unix_uids", [])}
    assert uids == {rendered.user_of(rendered.im)}
    assert loaded.rules


def config_callers(text: str) -> list[dict[str, Any]]:
    callers: list[dict[str, Any]] = tomllib.loads(text)["caller"]
    return callers


def test_writable_paths_the_sidecar_needs_are_on_its_own_empty_dirs(rendered: Rendered) -> None:
    """The root filesystem is read-only: every path the sidecar writes is on an emptyDir."""
    settings = rendered.sidecar_config
    writable = [settings["server"]["socket_path"], settings["access"]["private_socket_parent"]]
    if settings["store"]["backend"] == "sqlite":
        writable.append(settings["store"]["sqlite_path"])
    for path in writable:
        mount = rendered.mount_of(SIDECAR, path)
        assert not mount.get("readOnly"), path
        assert "emptyDir" in rendered.volume(mount["name"]), path
    private = rendered.mount_of(SIDECAR, settings["access"]["private_socket_parent"])
    others = [c for c in rendered.all_containers() if c["name"] != SIDECAR]
    for container in others:  # gRPC's private socket: the sidecar's alone
        assert private["name"] not in {m["name"] for m in container.get("volumeMounts", [])}


def test_prod_keeps_state_in_postgresql_with_the_password_from_a_secret(prod: Rendered) -> None:
    store = prod.sidecar_config["store"]
    assert store["backend"] == "postgresql"
    assert "sslmode=verify-full" in store["postgresql_dsn"]
    mount = prod.mount_of(SIDECAR, store["postgresql_password_file"])
    assert "secret" in prod.volume(mount["name"])


def test_every_overlay_audits_with_two_years_retention_and_a_spool_that_outlives_the_container(
    rendered: Rendered, tmp_path: Path
) -> None:
    """Every interaction is audited: ``[audit]`` is on, and its spool is on a writable volume."""
    path = tmp_path / "sidecar.toml"
    path.write_text(rendered.sidecar_toml, encoding="utf-8")
    env = {e["name"]: "0" for e in rendered.container(SIDECAR)["env"] if "valueFrom" in e}
    audit = config.load(path, environ=env).audit
    assert audit is not None
    assert audit.retention_days >= 730
    assert audit.checkpoint_interval_seconds <= 300
    # the spool is on a volume of its own (the root filesystem is read-only), writable, not memory:
    # it is fsynced and must outlive a restart of the container; the sidecar's alone
    spool = str(audit.spool_dir)
    mount = rendered.mount_of(SIDECAR, spool)
    assert not mount.get("readOnly") and mount["mountPath"] != spool  # spool_dir is made 0700
    claims = {
        t["metadata"]["name"]: t for t in rendered.workload["spec"].get("volumeClaimTemplates", [])
    }
    if mount["name"] in claims:
        assert "ReadWriteOnce" in claims[mount["name"]]["spec"]["accessModes"]
    else:
        assert rendered.volume(mount["name"])["emptyDir"].get("medium") != "Memory"
    for container in rendered.all_containers():
        if container["name"] != SIDECAR:
            assert mount["name"] not in {m["name"] for m in container.get("volumeMounts", [])}
    # each replica's chains are named after its pod
    instance = {e["name"]: e for e in rendered.container(SIDECAR)["env"]}[
        "YIBAO_SIDECAR__AUDIT__INSTANCE"
    ]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_prod_keeps_the_audit_spool_on_a_claim_that_outlives_the_pod(prod: Rendered) -> None:
    spool = prod.sidecar_config["audit"]["spool_dir"]
    name = prod.mount_of(SIDECAR, spool)["name"]
    statefulset = prod.one("StatefulSet")["spec"]
    assert name in {t["metadata"]["name"] for t in statefulset["volumeClaimTemplates"]}
    assert name not in {v["name"] for v in prod.pod["volumes"]}
    assert statefulset["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
