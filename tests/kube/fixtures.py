"""pytest fixtures for the Kubernetes emulator and process-kubelet.

Enable them with ``pytest_plugins = ["tests.kube.fixtures"]`` (in a test module or the root
conftest). Fixtures:

``kube_api``
    A fresh cluster per test: :class:`KubeCluster` with ``.url``, ``.kubeconfig``, ``.token``,
    ``.emulator``, ``.kubelet`` (None with ``kubelet=False``), ``.request_counts()`` and
    ``.reset_request_counts()``. While it is active, ``KUBECONFIG`` points at its kubeconfig
    (also patched into an already imported ``kubernetes_asyncio``, whose default location is
    read at import time) and KubeSpawner's cached ``load_config`` is cleared. Teardown kills
    every process the kubelet started and removes all temp dirs, also when the test failed.
    Options per test with the ``tests.kube.kube_options(uts=True, service_dns=False,
    image_entrypoints={...}, base_env={...}, kubelet=False)`` decorator. ``service_dns``
    (on by default) gives pods a hosts file naming every Service (see ``kubelet.py``).

``kube_client``
    An async ``kubernetes_asyncio.client.ApiClient`` for ``kube_api`` (closed afterwards).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .emulator import KubeEmulator
from .kubelet import ProcessKubelet


class KubeCluster:
    """An emulated API server plus (optionally) one process-kubelet node."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        kubelet: bool = True,
        uts: bool = False,
        service_dns: bool = True,
        image_entrypoints: dict[str, list[str]] | None = None,
        image_users: dict[str, int | str] | None = None,
        private_registries: tuple[str, ...] = (),
        base_env: dict[str, str] | None = None,
        node_name: str = "process-node",
    ) -> None:
        self.workdir = Path(workdir)
        self.emulator = KubeEmulator(self.workdir / "apiserver")
        self.kubelet: ProcessKubelet | None = None
        self._kubelet_options: dict[str, Any] | None = (
            {
                "uts": uts,
                "service_dns": service_dns,
                "image_entrypoints": image_entrypoints,
                "image_users": image_users,
                "private_registries": private_registries,
                "base_env": base_env,
                "node_name": node_name,
            }
            if kubelet
            else None
        )

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def kubeconfig(self) -> str:
        return self.emulator.kubeconfig

    @property
    def token(self) -> str:
        return self.emulator.token

    def request_counts(self, include_kubelet: bool = False) -> dict[str, int]:
        return self.emulator.request_counts(include_kubelet)

    def reset_request_counts(self) -> None:
        self.emulator.reset_request_counts()

    def start(self) -> KubeCluster:
        # Pods that run as a user of their own pass through to the kubelet's directory.
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o711)
        self.emulator.start()
        try:
            if self._kubelet_options is not None:
                self.kubelet = ProcessKubelet(
                    self.emulator.url,
                    self.emulator.token,
                    self.workdir / "kubelet",
                    **self._kubelet_options,
                )
                self.kubelet.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Kubelet first: it must kill its processes even if the API server is unhappy.
        try:
            if self.kubelet is not None:
                self.kubelet.stop()
        finally:
            self.emulator.stop()


def uts_available() -> bool:
    """``unshare --uts`` + ``hostname`` need root (or CAP_SYS_ADMIN) and util-linux."""
    return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("hostname"))


def use_kubeconfig(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every Kubernetes client in this process at ``path`` for the current test."""
    monkeypatch.setenv("KUBECONFIG", path)
    # In-cluster config wins over KUBECONFIG in KubeSpawner's load_config: make sure it fails.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    # kubernetes(_asyncio) read KUBECONFIG into a module constant at import time.
    for modname in ("kubernetes_asyncio.config.kube_config", "kubernetes.config.kube_config"):
        mod = sys.modules.get(modname)
        if mod is not None:
            monkeypatch.setattr(mod, "KUBE_CONFIG_DEFAULT_LOCATION", path)
    _reset_client_globals()


def _reset_client_globals() -> None:
    """Forget process-wide client state left by an earlier cluster (other port, other token)."""
    clients = sys.modules.get("kubespawner.clients")
    if clients is not None:
        # load_config is lru_cached: without this it would keep the first test's server.
        clients.load_config.cache_clear()
    spawner = sys.modules.get("kubespawner.spawner")
    if spawner is not None:
        # Reflectors are class-level singletons bound to an earlier test's event loop.
        spawner.KubeSpawner.reflectors.clear()
    client = sys.modules.get("kubernetes_asyncio.client")
    if client is not None:
        client.Configuration.set_default(None)


@pytest.fixture
def kube_api(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KubeCluster]:
    options = dict(getattr(request.function, "kube_api_options", {}))
    if options.get("uts") and not uts_available():
        pytest.skip("unshare --uts needs root and util-linux")
    workdir = tempfile.mkdtemp(prefix="kube-api-")
    cluster = None
    try:
        # (inside: bad options must not leave the directory behind either)
        cluster = KubeCluster(workdir, **options)
        cluster.start()
        use_kubeconfig(cluster.kubeconfig, monkeypatch)
        yield cluster
    finally:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            _reset_client_globals()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture
async def kube_client(kube_api: KubeCluster) -> AsyncIterator[Any]:
    from kubernetes_asyncio import config

    api = await config.new_client_from_config(config_file=kube_api.kubeconfig)
    try:
        yield api
    finally:
        await api.close()
