"""The rendered overlays, read once per session: ``kubectl kustomize`` from the kubectl wheel.

Three renderings of the sidecar component (k8s/components/sidecar): the dev and prod overlays
(into the example StatefulSet) and the example that adds it to an existing Deployment
(k8s/examples/deployment-with-sidecar). Rendering failures fail the tests that need them
(nothing is skipped).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")
DEPLOYMENT_EXAMPLE = "deployment-with-sidecar"
TARGETS = {
    "dev": K8S / "overlays" / "dev",
    "prod": K8S / "overlays" / "prod",
    DEPLOYMENT_EXAMPLE: K8S / "examples" / DEPLOYMENT_EXAMPLE,
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
KUBECTL = Path(sys.executable).with_name("kubectl")
SIDECAR = "yibao-sidecar"
IM = "im-service"  # the example StatefulSet's IM container


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.of_kind(kind)
        return found

    @property
    def workload(self) -> dict[str, Any]:
        """The one Deployment or StatefulSet: the IM workload that took the sidecar."""
        (found,) = [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]
        return found

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.workload["spec"]["template"]["spec"]
        return spec

    @property
    def im(self) -> str:
        """The IM team's container: the pod's only regular container."""
        (container,) = self.pod["containers"]
        name: str = container["name"]
        return name

    def user_of(self, container: str) -> int:
        """The uid ``container`` runs as (its own ``runAsUser``, else the pod's)."""
        pod_user = self.pod["securityContext"].get("runAsUser")
        user = self.container(container).get("securityContext", {}).get("runAsUser", pod_user)
        assert user is not None, f"{container} names no user"
        return int(user)

    def container(self, name: str) -> dict[str, Any]:
        for container in [*self.pod.get("initContainers", []), *self.pod["containers"]]:
            if container["name"] == name:
                return container
        raise AssertionError(f"no container {name}")

    def all_containers(self) -> list[dict[str, Any]]:
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    def volume(self, name: str) -> dict[str, Any]:
        (found,) = [v for v in self.pod["volumes"] if v["name"] == name]
        return found

    def configmap(self, prefix: str) -> dict[str, Any]:
        (found,) = [
            o for o in self.of_kind("ConfigMap") if o["metadata"]["name"].startswith(prefix + "-")
        ]
        return found

    @property
    def sidecar_toml(self) -> str:
        text: str = self.configmap("yibao-sidecar-config")["data"]["sidecar.toml"]
        return text

    @property
    def sidecar_config(self) -> dict[str, Any]:
        return tomllib.loads(self.sidecar_toml)

    def mount_of(self, container: str, path: str) -> dict[str, Any]:
        """The volume mount of ``container`` that holds ``path`` (the deepest one)."""
        mounts = [
            m
            for m in self.container(container)["volumeMounts"]
            if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
        ]
        assert mounts, f"{path} is on no volume of {container}"
        return max(mounts, key=lambda m: len(m["mountPath"]))


def render(overlay: str) -> Rendered:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(TARGETS[overlay])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Rendered(overlay, [o for o in yaml.safe_load_all(result.stdout) if o])


_CACHE: dict[str, Rendered] = {}


def rendered_once(overlay: str) -> Rendered:
    if overlay not in _CACHE:
        _CACHE[overlay] = render(overlay)
    return _CACHE[overlay]


@pytest.fixture(scope="session", params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """Each rendering of the component: both overlays and the Deployment example."""
    return rendered_once(request.param)


@pytest.fixture(scope="session")
def deployment() -> Rendered:
    return rendered_once(DEPLOYMENT_EXAMPLE)


@pytest.fixture(scope="session")
def dev() -> Rendered:
    return rendered_once("dev")


@pytest.fixture(scope="session")
def prod() -> Rendered:
    return rendered_once("prod")
