"""Run a rendered pod's containers on this machine, as close to the kubelet as a test can get.

Each container runs in a private mount namespace (``unshare --mount``) where:

* every volume lives once under ``ROOT/volumes/NAME`` (emptyDir: an empty directory of group
  ``fsGroup``; configMap: its data; secret: the files the test hands in, mode ``defaultMode``,
  group ``fsGroup``, as the kubelet writes them) and is bind-mounted at ``ROOT/<mountPath>``,
  read-only where the manifest says ``readOnly``; the volume store itself is then hidden;
* ``/`` is remounted read-only when ``readOnlyRootFilesystem`` is set, and the working directory
  is ``/``;
* the process runs as the container's ``runAsUser``/``runAsGroup`` with ``fsGroup`` as a
  supplementary group (``setpriv``), with the container's own environment only.

The one rewrite: a mount path ``P`` is ``ROOT/P`` here (a test cannot create ``/etc/yibao`` on the
host), so every occurrence of a mount path in commands, arguments, environment values and
ConfigMap files becomes ``ROOT/P``, and nothing else changes. Paths inside the image are mapped the
same way (``image_paths``: the virtual environment for ``/opt/yibao``, a bind-mounted file for a
library the dev image carries). Needs root, as the kubelet does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hsm
import sidecar

# As the kubelet creates them: emptyDir world-writable, group fsGroup with the setgid bit.
EMPTY_DIR_MODE = 0o2777


@dataclass
class Pod:
    root: Path
    spec: dict[str, Any]
    configmaps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, bytes]]
    image_paths: Mapping[str, Path] = field(default_factory=dict)
    image_files: Mapping[str, Path] = field(default_factory=dict)
    image_env: Mapping[str, str] = field(default_factory=dict)
    field_values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mounts = {m["mountPath"] for c in self._containers() for m in c.get("volumeMounts", [])}
        self.mount_paths = sorted(mounts | set(self.image_files), key=len, reverse=True)
        self._pattern = re.compile(
            r"(?<![\w/.-])("
            + "|".join(re.escape(p) for p in [*self.mount_paths, *self.image_paths])
            + r")(?=/|\b|$)"
        )
        self.fs_group = int(self.spec["securityContext"]["fsGroup"])
        self._make_volumes()

    def _containers(self) -> list[dict[str, Any]]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]

    def container(self, name: str) -> dict[str, Any]:
        (found,) = [c for c in self._containers() if c["name"] == name]
        return found

    def rebase(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            path = match.group(1)
            if path in self.image_paths:
                return str(self.image_paths[path])
            return f"{self.root}{path}"

        return self._pattern.sub(replace, text)

    def at(self, path: str) -> Path:
        """Where a path of the pod is on this machine."""
        return Path(self.rebase(path))

    def volume_dir(self, name: str) -> Path:
        return self.root / "volumes" / name

    # ------------------------------------------------------------------------------ volumes
    def _make_volumes(self) -> None:
        for volume in self.spec["volumes"]:
            where = self.volume_dir(volume["name"])
            where.mkdir(parents=True)
            if "emptyDir" in volume:
                os.chown(where, 0, self.fs_group)
                os.chmod(where, EMPTY_DIR_MODE)
            elif "configMap" in volume:
                data = self.configmaps[volume["configMap"]["name"]]
                for key, text in data.items():
                    (where / key).write_text(self.rebase(text), encoding="utf-8")
                    os.chmod(where / key, volume["configMap"].get("defaultMode", 0o644))
            elif "secret" in volume:
                secret = volume["secret"]
                data = self.secrets.get(secret["secretName"])
                if data is None:
                    assert secret.get("optional"), f"the test lacks Secret {secret['secretName']}"
                    continue
                for key, value in data.items():
                    (where / key).write_bytes(value)
                    os.chown(where / key, 0, self.fs_group)
                    os.chmod(where / key, secret.get("defaultMode", 0o644))
            else:
                raise AssertionError(f"volume kind not simulated: {volume}")
        for path in self.mount_paths:
            self.at(path).parent.mkdir(parents=True, exist_ok=True)
            if path in self.image_files:
                self.at(path).touch()
            else:
                self.at(path).mkdir(exist_ok=True)

    # ------------------------------------------------------------------------------ processes
    def argv(self, name: str, entrypoint: list[str]) -> list[str]:
        container = self.container(name)
        command = container.get("command", entrypoint)
        return [self.rebase(word) for word in [*command, *container.get("args", [])]]

    def environment(self, name: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {key: self.rebase(value) for key, value in self.image_env.items()}
        for entry in self.container(name).get("env", []):
            if "value" in entry:
                env[entry["name"]] = self.rebase(entry["value"])
            else:
                env[entry["name"]] = self.field_values[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        env.update(overrides or {})
        return env

    def script(
        self, name: str, argv: list[str], context_changes: Mapping[str, Any] | None = None
    ) -> str:
        """The shell steps that set up the container's mount namespace, then exec ``argv``."""
        container = self.container(name)
        context = {
            **self.spec.get("securityContext", {}),
            **container.get("securityContext", {}),
            **(context_changes or {}),
        }
        steps = ["set -e"]
        for image_path, source in self.image_files.items():
            steps.append(f"mount --bind {q(source)} {q(self.at(image_path))}")
            steps.append(f"mount -o remount,bind,ro {q(self.at(image_path))}")
        steps += _expose_interpreter(self.root)
        for mount in container.get("volumeMounts", []):
            target = q(self.at(mount["mountPath"]))
            steps.append(f"mount --bind {q(self.volume_dir(mount['name']))} {target}")
            if mount.get("readOnly"):
                steps.append(f"mount -o remount,bind,ro {target}")
        steps.append(f"mount -t tmpfs -o mode=0755 hidden {q(self.root / 'volumes')}")
        if context.get("readOnlyRootFilesystem"):
            steps.append("mount -o remount,bind,ro /")
        steps.append("cd /")
        user = int(context["runAsUser"])
        group = int(context.get("runAsGroup", user))
        steps.append(
            f"exec setpriv --reuid {user} --regid {group} --groups {self.fs_group} "
            f"--inh-caps=-all --bounding-set=-all --no-new-privs -- "
            + " ".join(q(word) for word in argv)
        )
        return "\n".join(steps)

    def popen(
        self,
        name: str,
        entrypoint: list[str],
        overrides: Mapping[str, str] | None = None,
        context_changes: Mapping[str, Any] | None = None,
    ) -> subprocess.Popen[str]:
        env = self.environment(name, overrides)
        argv = self.argv(name, entrypoint)
        if argv and not argv[0].startswith("/"):
            found = shutil.which(argv[0], path=env.get("PATH"))
            assert found, f"{argv[0]} is not on the container's PATH"
        script = self.script(name, argv, context_changes)
        return subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        name: str,
        entrypoint: list[str],
        context_changes: Mapping[str, Any] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a container to completion; ``context_changes`` alter its securityContext."""
        process = self.popen(name, entrypoint, context_changes=context_changes)
        stdout, stderr = process.communicate(timeout=90)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def q(value: object) -> str:
    return shlex.quote(str(value))


def _expose_interpreter(root: Path) -> list[str]:
    """Steps that let an unprivileged user run this Python when it lives in a 0700 directory.

    pyenv installs under /root (mode 0700), and a checkout may live there too. In the namespace,
    each needed tree (the interpreter, the virtual environment, our packages) is moved onto a
    world-traversable tmpfs laid over the closed directory; nothing else of it is visible.
    """
    needed = [
        Path(os.path.realpath(sys.executable)),
        Path(sys.prefix),
        *(Path(package.__file__).parent for package in (sidecar, hsm)),
    ]
    children: dict[Path, set[Path]] = {}
    for path in needed:
        for closed in reversed(path.parents):
            if closed != Path("/") and not os.stat(closed).st_mode & 0o001:
                children.setdefault(closed, set()).add(closed / path.relative_to(closed).parts[0])
                break
    steps: list[str] = []
    for number, (closed, kept) in enumerate(sorted(children.items())):
        stages = {child: root / f"stage-{number}-{i}" for i, child in enumerate(sorted(kept))}
        for child, stage in stages.items():
            stage.mkdir(exist_ok=True)
            steps.append(f"mount --bind {q(child)} {q(stage)}")
        steps.append(f"mount -t tmpfs -o mode=0755 cover {q(closed)}")
        for child, stage in stages.items():
            steps += [f"mkdir {q(child)}", f"mount --move {q(stage)} {q(child)}"]
    return steps
