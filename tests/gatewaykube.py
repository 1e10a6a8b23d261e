"""A real hub (KubeSpaceSpawner) and a real dask-gateway-server (KubeSpaceBackend) against
the Kubernetes emulator and the process-kubelet, for the gateway's Kubernetes tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import requests
from hubclient import free_port, wait_until_healthy
from test_kube_spawner import HUB_NAMESPACE, Kubectl, RunningKubeHub, chart_rbac

BIN = os.path.dirname(sys.executable)
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_IMAGE = "cluster:test"
IMAGE_ENTRYPOINTS = {CLUSTER_IMAGE: [sys.executable, "-m", "clusterhub.engines.entrypoint"]}

# The gateway exactly as the chart runs it (clusterhub's config module), plus what the test
# machine needs: every pod of the process-kubelet shares this machine's network, so
# schedulers take any free port and report it (a real cluster gives each pod an address).
GATEWAY_TEST_CONFIG = """
from clusterhub.gateway.config import configure_gateway
from clusterhub.settings import PlatformSettings

configure_gateway(c, PlatformSettings.load())
c.KubeSpaceBackend.scheduler_port = 0
c.KubeSpaceBackend.dashboard_port = 0
c.KubeSpaceBackend.api_port = 0
c.KubeSpaceBackend.cluster_status_period = 1
c.KubeSpaceBackend.worker_status_period = 1
c.KubeSpaceBackend.cluster_heartbeat_period = 2
c.DaskGateway.log_level = "DEBUG"
{extra}
"""


HUB_CONFIG_PROFILE = """
from clusterhub.profiles import DEFAULT_PROFILES
c.KubeSpaceSpawner.profiles = DEFAULT_PROFILES + [{
    "slug": "wide",
    "display_name": "Wide workers",
    "engines": [],
    "workers": {"default": 1, "max": 2},
    "worker_cores": {"default": 3, "max": 3},
    "worker_memory_gib": {"default": 3, "max": 6},
}]
"""


def prepare_hub_namespace(kubectl: Kubectl) -> None:
    """What a platform admin does once: the hub's namespace with its registry credentials."""
    for path, body in (
        (
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HUB_NAMESPACE}},
        ),
        (
            f"/api/v1/namespaces/{HUB_NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "registry-credentials", "namespace": HUB_NAMESPACE},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6IHt9fQ=="},
            },
        ),
    ):
        kubectl.post(path, body).raise_for_status()


class GatewayHub(RunningKubeHub):
    """The Kubernetes-mode hub with the gateway registered as its service (as the chart)."""

    def __init__(self, root: str, cluster, rbac, **kube_settings):
        # The hub and the gateway act with the chart's ServiceAccounts and RBAC.
        os.makedirs(root, exist_ok=True)
        super().__init__(
            root,
            cluster,
            rbac.kubeconfig(rbac.service_account("hub"), os.path.join(root, "hub-kubeconfig")),
            rbac.space_roles,
        )
        # A profile only the hub's config has (as the chart's hub.extraConfig may set): the
        # gateway gets no copy of the profiles and must still bound clusters by it.
        with open(os.path.join(root, "test_config.py"), "a") as f:
            f.write(HUB_CONFIG_PROFILE)
        self.gateway_kubeconfig = rbac.kubeconfig(
            rbac.service_account("dask-gateway"), os.path.join(root, "gateway-kubeconfig")
        )
        self.gateway_token = secrets.token_hex(32)
        self.gateway_http_port = free_port()
        self.gateway_tcp_port = free_port()
        with open(self.settings_file) as f:
            settings = json.load(f)
        self.hub_port = settings["hub_port"]
        settings.update(
            gateway_encrypt_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            gateway_api_port=free_port(),
            gateway_http_port=self.gateway_http_port,
            gateway_tcp_port=self.gateway_tcp_port,
        )
        settings["kubernetes"].update(
            cluster_image=CLUSTER_IMAGE,
            image_pull_policy="IfNotPresent",
            gateway_url=self.gateway_url,
            gateway_proxy_address=f"gateway://127.0.0.1:{self.gateway_tcp_port}",
        )
        settings["kubernetes"].update(kube_settings)
        with open(self.settings_file, "w") as f:
            json.dump(settings, f)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_http_port}/services/dask-gateway"

    def env(self) -> dict[str, str]:
        env = super().env()
        env["CLUSTERHUB_GATEWAY_API_TOKEN"] = self.gateway_token
        return env

    def user_token(self, name: str) -> str:
        """A token of ``name`` that may use the gateway (made by the admin, as a script would)."""
        self.admin_api("POST", "/users", json={"usernames": [name]})
        response = self.admin_api(
            "POST",
            f"/users/{name}/tokens",
            json={"scopes": ["access:services!service=dask-gateway"], "expires_in": 3600},
        )
        response.raise_for_status()
        return response.json()["token"]


class GatewayProcess:
    """``dask-gateway-server -f <clusterhub's config + test settings>`` as a subprocess."""

    def __init__(self, hub: GatewayHub, extra_config: str = ""):
        self.hub = hub
        self.config = os.path.join(hub.root, f"gateway_config_{secrets.token_hex(4)}.py")
        with open(self.config, "w") as f:
            f.write(GATEWAY_TEST_CONFIG.format(extra=extra_config))
        self.log_path = os.path.join(hub.root, "gateway.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> GatewayProcess:
        env = self.hub.env()
        env.update(
            CLUSTERHUB_SETTINGS=self.hub.settings_file,
            KUBECONFIG=self.hub.gateway_kubeconfig,
            JUPYTERHUB_API_TOKEN=self.hub.gateway_token,
            JUPYTERHUB_API_URL=f"http://127.0.0.1:{self.hub.hub_port}/hub/api",
        )
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "dask-gateway-server"), "-f", self.config],
            cwd=self.hub.root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait_until_healthy(self.proc, f"{self.hub.gateway_url}/api/health", timeout):
            return self
        report = self.diagnose()
        self.stop()  # never leave a half-started gateway holding its ports
        raise RuntimeError("gateway did not start:\n" + report)

    def diagnose(self) -> str:
        """Why a start failed: who listens on the gateway's ports, what each answers, and
        the end of its log."""
        import psutil

        with open(self.hub.settings_file) as f:
            settings = json.load(f)
        lines = [f"gateway pid {self.proc.pid}, exit code {self.proc.poll()}"]
        for name in ("gateway_http_port", "gateway_tcp_port", "gateway_api_port"):
            port = settings[name]
            owners = []
            for conn in psutil.net_connections("tcp"):
                if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN":
                    try:
                        owners.append(f"{conn.pid} {' '.join(psutil.Process(conn.pid).cmdline())}")
                    except (psutil.Error, TypeError):
                        owners.append(str(conn.pid))
            lines.append(f"{name} {port}: listening {owners or 'nobody'}")
        for url in (
            f"{self.hub.gateway_url}/api/health",
            f"http://127.0.0.1:{settings['gateway_api_port']}/api/health",
        ):
            try:
                answer = requests.get(url, timeout=5)
                lines.append(f"GET {url}: {answer.status_code} {answer.text[:200]!r}")
            except requests.RequestException as exc:
                lines.append(f"GET {url}: {type(exc).__name__}")
        return "\n".join(lines) + "\n" + self.log_tail(120)

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:  # the gateway's proxy (a Go binary) lives in the gateway's session
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    # -- the REST API, as a user with a hub token ---------------------------------------------
    def api(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        return requests.request(
            method,
            f"{self.hub.gateway_url}/api/v1/{path.lstrip('/')}",
            headers={"Authorization": f"jupyterhub {token}"},
            timeout=30,
            **kwargs,
        )

    def wait_status(self, name: str, token: str, statuses: set[str], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        model: dict = {}
        while time.monotonic() < deadline:
            response = self.api("GET", f"clusters/{name}", token)
            if response.status_code == 200:
                model = response.json()
                if model["status"] in statuses:
                    return model
            time.sleep(0.3)
        raise AssertionError(
            f"cluster {name} is {model.get('status')}, not {statuses}\n" + self.log_tail()
        )


def cluster_pods(kubectl: Kubectl, namespace: str) -> dict[str, dict]:
    """The gateway's pods in ``namespace`` (none if the namespace is gone)."""
    response = kubectl.get(
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=gateway.clusterhub.io/cluster"
    )
    if response.status_code == 404:
        return {}
    response.raise_for_status()
    return {p["metadata"]["name"]: p for p in response.json()["items"]}


@contextlib.contextmanager
def running_kube_cluster(prefix: str, **options) -> Iterator:
    """An emulated cluster with a process-kubelet whose pods find this checkout's tools."""
    from tests.kube import pod_shared_dir
    from tests.kube.fixtures import KubeCluster

    workdir = tempfile.mkdtemp(prefix=prefix)
    home = pod_shared_dir(os.path.join(workdir, "home"))
    base_env = {"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": home}
    kube = KubeCluster(workdir, base_env=base_env, **options)
    try:
        kube.start()
        yield kube
    finally:
        kube.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def running_gateway_hub(cluster, root: str, **kube_settings) -> Iterator[GatewayHub]:
    """The Kubernetes-mode hub (gateway registered) in a prepared hub namespace; settings
    as the chart writes them (``kubernetes`` section of clusterhub.settings) override."""
    kubectl = Kubectl(cluster)
    if kubectl.get(f"/api/v1/namespaces/{HUB_NAMESPACE}").status_code == 404:
        prepare_hub_namespace(kubectl)
    rbac = chart_rbac(cluster)  # (already there: each object is kept as it is)
    running = GatewayHub(root, cluster, rbac, **kube_settings).start()
    try:
        yield running
    finally:
        running.stop()


# The module fixtures of every gateway test module on the emulator; each module brings its
# own ``cluster`` (the emulator and kubelet, with the images it needs).
@pytest.fixture(scope="module", name="kubectl")
def kubectl_fixture(cluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="module", name="hub")
def hub_fixture(cluster, tmp_path_factory) -> Iterator[GatewayHub]:
    with running_gateway_hub(cluster, str(tmp_path_factory.mktemp("gatewayhub"))) as running:
        yield running
