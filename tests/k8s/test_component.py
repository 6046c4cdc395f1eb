"""The sidecar component goes into an existing IM workload and leaves the IM team's parts alone.

k8s/components/sidecar is taken by the example StatefulSet (the dev and prod overlays) and the
example Deployment (k8s/examples/deployment-with-sidecar); test_manifests.py holds every rendering
to the pod's promises. Here: both kinds are covered, the IM container comes out as its team wrote
it, and only the workloads labelled ``yibao-sidecar/inject: "true"`` get a sidecar.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import K8S, KUBECTL, SIDECAR, TARGETS, Rendered, rendered_once

EXAMPLE_OF = {"dev": "statefulset", "prod": "statefulset", "deployment-with-sidecar": "deployment"}
INJECT = "yibao-sidecar/inject"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def workload_of(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_the_component_renders_into_a_deployment_and_a_statefulset() -> None:
    kinds = {rendered_once(name).workload["kind"] for name in TARGETS}
    assert kinds == {"Deployment", "StatefulSet"}


@pytest.mark.parametrize("target", list(EXAMPLE_OF))
def test_the_im_teams_workload_keeps_its_container_and_volumes(target: str) -> None:
    rendered: Rendered = rendered_once(target)
    original = workload_of(
        kustomize(K8S / "examples" / EXAMPLE_OF[target]), rendered.workload["kind"]
    )
    before = original["spec"]["template"]["spec"]
    (im_before,) = before["containers"]
    (im_after,) = rendered.pod["containers"]
    # the IM container exactly as its team wrote it, but for the image the overlay pins
    assert {k: v for k, v in im_after.items() if k != "image"} == {
        k: v for k, v in im_before.items() if k != "image"
    }
    assert im_after["image"].startswith("registry.example.com/im/")
    # its own volumes are still there, its pod settings kept or only tightened
    after_volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    for volume in before.get("volumes", []):
        assert after_volumes[volume["name"]] == volume
    for key in ("serviceAccountName", "automountServiceAccountToken", "enableServiceLinks"):
        assert rendered.pod[key] == before[key], key
    assert before["securityContext"].items() <= rendered.pod["securityContext"].items()
    assert rendered.workload["spec"]["selector"] == original["spec"]["selector"]
    # the sidecar's own containers keep their securityContext and resources in every rendering
    sidecar = rendered.container(SIDECAR)
    assert sidecar["securityContext"]["runAsUser"] == 10001
    assert sidecar["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "384Mi"},
    }


WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {labels}
spec:
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: app
          image: app
"""


def test_only_workloads_labelled_for_the_sidecar_get_one(tmp_path: Path) -> None:
    shutil.copytree(K8S / "components" / "sidecar", tmp_path / "components" / "sidecar")
    app = tmp_path / "app"
    app.mkdir()
    (app / "chat.yaml").write_text(WORKLOAD.format(name="chat", labels=f'{{"{INJECT}": "true"}}'))
    (app / "search.yaml").write_text(WORKLOAD.format(name="search", labels="{}"))
    (app / "kustomization.yaml").write_text(
        "resources: [chat.yaml, search.yaml]\ncomponents: [../components/sidecar]\n"
    )
    objects = {o["metadata"]["name"]: o for o in kustomize(app) if o["kind"] == "Deployment"}
    chat = objects["chat"]["spec"]["template"]
    search = objects["search"]["spec"]["template"]
    assert [c["name"] for c in chat["spec"]["initContainers"]] == ["hsm-pin", SIDECAR]
    assert (
        chat["metadata"]["labels"][INJECT] == "true"
    )  # what the NetworkPolicy and PodMonitor select
    assert "initContainers" not in search["spec"] and "volumes" not in search["spec"]
    assert INJECT not in search["metadata"]["labels"]
    # a Deployment gets no ordinal-based msgid slot (StatefulSets only)
    env = {e["name"] for e in chat["spec"]["initContainers"][1]["env"]}
    assert "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT" not in env
