"""The Containerfile: hadolint-clean, and consistent with the manifests that run its images.

No container engine runs on these machines, so the image is checked as text: hadolint for the
usual mistakes, and a small parser for what the manifests rely on (user, entrypoint and
arguments, port, paths) and for what must not be in the runtime image (compilers, SoftHSM).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.k8s.conftest import REPO, SIDECAR, Rendered

CONTAINERFILE = REPO / "Containerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make ", "libssl-dev", "-dev")
# The shared libraries the runtime image may install from Debian: libcurl for pycurl.
RUNTIME_DEBS = {"libcurl4", "libengine-pkcs11-openssl"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        return self.values(keyword)[-1]


def parse(text: str) -> dict[str, Stage]:
    """Stages by name: each instruction with its continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, words[0])
        elif current is not None:
            current.instructions.append((keyword, value.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(CONTAINERFILE.read_text(encoding="utf-8"))


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stages_are_build_softhsm_devkit_runtime_and_dev(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["build", "softhsm", "devkit", "runtime", "dev"]
    assert stages["devkit"].base == "build"
    # dev is the runtime image plus the dev kit's environment and SoftHSM, nothing else
    assert stages["dev"].base == "runtime"
    sources = [v.split()[0] for v in stages["dev"].values("COPY")]
    assert sources == ["--from=devkit", "--from=softhsm"]


def test_the_runtime_environment_is_built_without_the_dev_kit(stages: dict[str, Stage]) -> None:
    build = " ".join(value for _, value in stages["build"].instructions)
    assert "devkit" not in build and "hypercorn" not in build
    assert "devkit" in " ".join(stages["devkit"].values("COPY"))


def test_the_runtime_image_has_no_compilers_and_no_softhsm(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    text = " ".join(value for _, value in runtime.instructions).lower()
    for word in (*COMPILERS, "softhsm"):
        assert word not in text, word
    installed = set()
    for command in " ".join(runtime.values("RUN")).split("&&"):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            installed |= {w for w in words[2:] if not w.startswith("-")}
    assert installed <= RUNTIME_DEBS, installed - RUNTIME_DEBS
    sources = [v.split()[0] for v in runtime.values("COPY")]
    assert sources == ["--from=build"]  # the virtual environment only
    assert "softhsm" in " ".join(stages["dev"].values("COPY"))


def _uid_gid(stage: Stage) -> tuple[int, int]:
    user, _, group = stage.last("USER").partition(":")
    return int(user), int(group)


def test_the_image_user_is_the_pods_non_root_user(
    stages: dict[str, Stage], rendered: Rendered
) -> None:
    uid, gid = _uid_gid(stages["runtime"])
    assert uid != 0 and gid != 0
    pod = rendered.pod["securityContext"]
    sidecar = {**pod, **rendered.container(SIDECAR)["securityContext"]}
    assert (sidecar["runAsUser"], sidecar["runAsGroup"]) == (uid, gid)
    assert pod["fsGroup"] == gid


def test_entrypoint_arguments_and_port_match_the_sidecar_container(
    stages: dict[str, Stage], rendered: Rendered
) -> None:
    runtime = stages["runtime"]
    entrypoint = json.loads(runtime.last("ENTRYPOINT"))
    cmd = json.loads(runtime.last("CMD"))
    sidecar = rendered.container(SIDECAR)
    assert "command" not in sidecar  # the image's entrypoint runs
    assert Path(entrypoint[0]).name == "yibao-sidecar"
    assert sidecar["args"] == cmd
    ports = [str(p["containerPort"]) for p in sidecar["ports"]]  # health, metrics
    assert runtime.values("EXPOSE") == [" ".join(ports)]
    assert runtime.last("WORKDIR") == "/"


def test_init_containers_use_the_same_image_and_its_tools(
    stages: dict[str, Stage], rendered: Rendered
) -> None:
    sidecar_image = rendered.container(SIDECAR)["image"]
    env_line = " ".join(stages["runtime"].values("ENV"))
    entry_dir = str(Path(json.loads(stages["runtime"].last("ENTRYPOINT"))[0]).parent)
    assert f"PATH={entry_dir}:" in env_line  # yibao-hsm resolves in init containers
    for name in ("hsm-pin", "softhsm-token"):
        try:
            container = rendered.container(name)
        except AssertionError:
            continue  # softhsm-token exists in dev only
        assert container["image"] == sidecar_image, name


def test_the_dev_image_puts_softhsm_where_the_dev_configuration_looks(
    stages: dict[str, Stage], dev: Rendered, prod: Rendered
) -> None:
    destination = shlex.split(stages["dev"].last("COPY"))[-1]
    assert dev.sidecar_config["hsm"]["module"] == destination
    assert dev.container(SIDECAR)["image"].rsplit(":", 1)[0].endswith("-dev")
    assert not prod.container(SIDECAR)["image"].rsplit(":", 1)[0].endswith("-dev")


def test_everything_the_build_copies_is_in_the_context_and_not_ignored(
    stages: dict[str, Stage],
) -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "node_modules", ".git"} <= ignored  # no multi-GB context uploads
    for stage in stages.values():
        for value in stage.values("COPY"):
            words = shlex.split(value)
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert (REPO / source).exists(), f"{stage.name}: COPY {source}"
                assert source.rstrip("/").split("/")[0] not in ignored, source
