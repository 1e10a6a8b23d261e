"""Test harness: an in-memory Kubernetes API emulator and a process-kubelet.

No real API server can run on the build machine, so tests that exercise Kubernetes code talk
to :class:`~tests.kube.emulator.KubeEmulator` (plain HTTP, bearer token, JSON) while
:class:`~tests.kube.kubelet.ProcessKubelet` runs every scheduled pod's containers as real
local processes. Read the docstring of ``emulator.py`` for what is and is not emulated.

``tests/conftest.py`` loads the fixtures (``pytest_plugins = ["tests.kube.fixtures"]``);
import helpers such as :func:`kube_options` from ``tests.kube``, not from
``tests.kube.fixtures``: a plugin imported by a test module before pytest loads it loses
assertion rewriting (and pytest warns).

``tests`` has no ``__init__.py`` on purpose (pytest's rootdir-relative imports); ``tests.kube``
is importable as a namespace package because pytest puts the repository root on ``sys.path``
(``pythonpath`` in pyproject.toml), as it puts ``tests/`` there for the shared helpers. A
script outside pytest (the benchmarks) runs as a module from the root: ``tests.kube``
imports ``tests.waiting``, which works both ways.
"""

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from tests.waiting import wait_for, wait_for_async

from .emulator import KubeEmulator
from .errors import ApiError
from .kubelet import ProcessKubelet

__all__ = [
    "POD_API_CLIENT",
    "ApiError",
    "KubeEmulator",
    "ProcessKubelet",
    "StandInUser",
    "busy_ports",
    "kube_options",
    "pod_shared_dir",
    "wait_for",
    "wait_for_async",
]

F = TypeVar("F", bound=Callable[..., Any])

# The user of the clusterhub images (images/base: jovyan, 1000:1000), as the process-kubelet
# needs to know it: a container without runAsUser runs as its image's USER.
CLUSTERHUB_IMAGE_USERS = {"notebook:test": "1000:1000", "cluster:test": "1000:1000"}


def pod_shared_dir(path: str | os.PathLike[str]) -> str:
    """A directory every pod may write whichever user it runs as (mode 1777, as /tmp): for the
    HOME, scratch and temporary directories a test hands its pods. Its parents must let
    others pass (a cluster's workdir does; pytest's own temporary directories do not)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o1777)
    return os.fspath(path)


def kube_options(**options: Any) -> Callable[[F], F]:
    """Options for the ``kube_api`` fixture of one test.

    ``uts``, ``image_entrypoints``, ``base_env``, ``node_name`` go to the kubelet;
    ``kubelet=False`` runs the API server alone. A decorator rather than a marker so that no
    conftest has to register a marker name.
    """

    def decorate(fn: F) -> F:
        fn.kube_api_options = options  # type: ignore[attr-defined]
        return fn

    return decorate


class StandInUser:
    """The attributes of jupyterhub.user.User a spawner reads, for spawners driven in-process
    without a hub (the user object is not what those tests examine)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.escaped_name = name
        self.id = 1
        self.url = f"/user/{name}/"
        self.groups: list[Any] = []
        self.server = None

    def progress_url(self, server_name: str = "") -> str:
        return f"/hub/api/users/{self.name}/server/progress"


def busy_ports(ports: tuple[int, ...]) -> list[int]:
    """The ones of ``ports`` on 127.0.0.1 that a listener holds (the engines' fixed ports)."""
    found = []
    for port in ports:
        with socket.socket() as sock:
            # As the engines bind (zmq sets SO_REUSEADDR): a TIME_WAIT left by an earlier
            # run is no obstacle, a listener is.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                found.append(port)
    return found


# Code for a pod's own process (a kernel): ``call(method, path, body)`` against the API server
# with the pod's ServiceAccount token, as any attendee's code can; answers the HTTP status.
POD_API_CLIENT = """
import json, os, ssl, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
base = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
token, ns = open(sa + "token").read(), open(sa + "namespace").read()
tls = ssl.create_default_context(cafile=sa + "ca.crt")
def call(method, path, body=None, content_type="application/json"):
    request = urllib.request.Request(
        base + path, method=method, data=body and json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, context=tls, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code
"""
