"""The process-kubelet's process plumbing (see :mod:`tests.kube.kubelet`): its constants,
launching a container's process in its own session and namespaces, reading its log, what
the machine's mounts allow, and the record of one container of a pod."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .base import Obj

log = logging.getLogger(__name__)

POD_IP = "127.0.0.1"
TAG_VARIABLE = "PROCESS_KUBELET_TAG"
KUBELET_USER_AGENT = "process-kubelet/v1.33.0"
# The longest a pods/exec command may run (the real kubelet streams without end; tests do not).
EXEC_TIMEOUT = 300.0
CLUSTER_DOMAIN = "cluster.local"
# The head of the hosts file a real kubelet writes into every pod.
_HOSTS_HEAD = [
    "# Kubernetes-managed hosts file (process-kubelet: every Service is on loopback).",
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "fe00::0\tip6-mcastprefix",
    "fe00::1\tip6-allnodes",
    "fe00::2\tip6-allrouters",
]


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes ``$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            name = text[i + 2 : end] if end != -1 else None
            if name is not None and name in env:
                out.append(env[name])
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


async def poll_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (processes have no event)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def launch(
    argv: list[str], cwd: Path, env: dict[str, str], log_path: Path, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    """Start one container process in its own session with output appended to its log.

    Synchronous on purpose: fork+exec is quick, and the loop needs the Popen right away.
    """
    with open(log_path, "ab") as logf:
        try:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            logf.write(f"failed to start {argv!r}: {exc}\n".encode())
            raise


async def _until_closed(read_fd: int, timeout: float = 60) -> None:
    """Wait until every writer of a pipe has closed it (or exited); then close our end."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    def readable() -> None:
        if not os.read(read_fd, 4096) and not closed.done():
            closed.set_result(None)

    loop.add_reader(read_fd, readable)
    try:
        await asyncio.wait_for(closed, timeout)
    except asyncio.TimeoutError:
        pass  # a wrapper stuck in its setup: the container is reported as it is
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)


def read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


class _ConfigError(Exception):
    """A container cannot be configured yet (missing Secret/ConfigMap key)."""


class _MountError(_ConfigError):
    """A volume cannot be set up yet (missing Secret/ConfigMap); the pod stays creating."""


def _tool(name: str) -> str:
    """Absolute path of a util-linux/coreutils tool: a pod's PATH may not contain it."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or name


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    """Mount points of this process's mount namespace, in mount order."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    return [_unescape_mountinfo(line.split()[4]) for line in lines if len(line.split()) > 4]


def mount_namespaces_work() -> bool:
    """Whether ``unshare --mount`` works here (root or CAP_SYS_ADMIN, util-linux present)."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    try:
        result = subprocess.run(
            [_tool("unshare"), "--mount", "--propagation", "private", _tool("true")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


class _Container:
    def __init__(self, spec: Obj, pod_dir: Path, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.log_path = pod_dir / f"{self.name}.log"
        self.previous_log_path = pod_dir / f"{self.name}.previous.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.done = False  # terminated and will not be restarted
        self.exit_code: int | None = None
        self.probe_task: asyncio.Task[None] | None = None
        self.tag = ""  # set per start: PROCESS_KUBELET_TAG of this run's processes
        self.env: dict[str, str] = {}  # the running process's environment (for exec)

    def status(self) -> Obj:
        st: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if not self.init:
            st["started"] = self.started
        if self.proc is not None:
            st["containerID"] = f"process://{self.proc.pid}"
        return st
