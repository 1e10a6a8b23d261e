"""The hub with the Helm chart's own settings (its rendered hub Secret), its own
ServiceAccount and RBAC, against the Kubernetes emulator: a notebook in its user's namespace
reaches the hub through the name the chart gives it.

Only what a local process cannot take from the chart is changed: the data dir, the public
and proxy ports (the hub starts its own proxy: there is no proxy pod here) and the notebook
command. The hub listens on the chart's port 8081, and every Service the chart names
resolves in each pod as the cluster's DNS would resolve it there.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile

import pytest
import requests
from hubclient import BrowserUser, free_port
from test_kube_spawner import BIN, CHECKOUT, TEST_HUB_CONFIG, RunningKubeHub, spawn

from clusterhub.ports import port_is_free
from tests.kube import CLUSTERHUB_IMAGE_USERS, pod_shared_dir
from tests.kube.chart import ChartRbac, render_chart
from tests.kube.fixtures import KubeCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="a private /etc/hosts for the hub needs root"),
]
NAMESPACE = "workshop"
RELEASE = "ch"
HUB_PORT = 8081  # the chart's


def service_names(services: list[str]) -> list[str]:
    """The names the cluster's DNS gives the hub namespace's Services inside it."""
    names = []
    for svc in services:
        names += [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc"]
        names.append(f"{svc}.{NAMESPACE}.svc.cluster.local")
    return names


def one(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


class ChartHub(RunningKubeHub):
    """RunningKubeHub whose settings are the chart's rendered settings.json."""

    def __init__(
        self,
        root: str,
        cluster: KubeCluster,
        kubeconfig: str,
        settings: dict,
        services: list[str],
    ):
        super().__init__(root, cluster, kubeconfig)
        self.workshop_code = settings["workshop_code"]
        self.admin_password = settings["admin_password"]
        with open(os.path.join(root, "test_config.py"), "w") as f:
            # The chart's own pull secrets (none by default), not the other test hub's.
            config = TEST_HUB_CONFIG.format(singleuser=os.path.join(BIN, "jupyterhub-singleuser"))
            f.write(
                config.replace(
                    'c.KubeSpaceSpawner.image_pull_secrets = ["registry-credentials"]', ""
                )
            )
        local = {
            "data_dir": self.data_dir,
            "ip": "127.0.0.1",
            "port": self.port,
            "proxy_api_port": free_port(),
            "proxy_command": [
                os.path.join(CHECKOUT, "node_modules", ".bin", "configurable-http-proxy")
            ],
            "extra_config_file": os.path.join(root, "test_config.py"),
        }
        kube = dict(settings["kubernetes"], proxy_api_url="", image_pull_secrets=[])
        with open(self.settings_file, "w") as f:
            json.dump({**settings, **local, "kubernetes": kube}, f)
        # The hub's pod resolves the names of its namespace's Services through the cluster's
        # DNS; this hub process (and the proxy it starts) gets them from a hosts file of its
        # own, bind-mounted over /etc/hosts in a private mount namespace.
        hosts = os.path.join(root, "hosts")
        with open("/etc/hosts") as f:
            machine = f.read()
        with open(hosts, "w") as f:
            f.write(machine + "\n127.0.0.1 " + " ".join(service_names(services)) + "\n")
        script = f'mount --bind {hosts} /etc/hosts && exec "$@"'
        self.command_prefix = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"
        ]  # fmt: skip


@pytest.fixture(scope="module")
def chart_hub(tmp_path_factory):
    if not port_is_free("", HUB_PORT):
        pytest.fail(f"port {HUB_PORT} (the chart's hub port) is taken on this machine")
    workdir = tempfile.mkdtemp(prefix="kube-chart-hub-")
    home = pod_shared_dir(os.path.join(workdir, "home"))
    cluster = KubeCluster(
        workdir,
        image_users=CLUSTERHUB_IMAGE_USERS,
        base_env={"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": home},
    )
    hub = None
    try:
        cluster.start()
        objects = render_chart(
            RELEASE, NAMESPACE, "--set-string", "hub.workshopCode=tea-biscuit-42"
        )
        rbac = ChartRbac(cluster.url, cluster.token, objects, NAMESPACE).install()
        # The chart's hub Service: what makes its name resolve in every pod.
        service = one(objects, "Service", "hub")
        requests.post(
            f"{cluster.url}/api/v1/namespaces/{NAMESPACE}/services",
            json=service,
            headers={"Authorization": f"Bearer {cluster.token}"},
            timeout=10,
        ).raise_for_status()
        secret = one(objects, "Secret", f"{RELEASE}-clusterhub-hub")
        settings = json.loads(base64.b64decode(secret["data"]["settings.json"]))
        root = tmp_path_factory.mktemp("chart-hub")
        kubeconfig = rbac.kubeconfig(rbac.service_account("hub"), root / "kubeconfig")
        services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
        hub = ChartHub(str(root), cluster, kubeconfig, settings, services).start()
        yield hub
    finally:
        if hub is not None:
            hub.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_notebook_reaches_the_hub_by_the_name_the_chart_gives(chart_hub):
    settings = json.load(open(chart_hub.settings_file))
    assert settings["hub_port"] == HUB_PORT and settings["kubernetes"]["hub_connect_url"]
    user = spawn(chart_hub, "ada", profile="dask")
    kernel = user.kernel()
    try:
        said = kernel.execute(
            "import json, os, urllib.request\n"
            "url = os.environ['JUPYTERHUB_API_URL']\n"
            "print(url, json.load(urllib.request.urlopen(url, timeout=10))['version'])"
        )
    finally:
        kernel.close()
    url, version = said.split()
    assert url == settings["kubernetes"]["hub_connect_url"] + "/hub/api"
    assert version
    BrowserUser(chart_hub, "ada").stop_server(timeout=90)
