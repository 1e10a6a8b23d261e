"""A real JupyterHub with KubeSpaceSpawner against the Kubernetes emulator.

The process-kubelet really runs each pod's command, so every notebook here is a real
``jupyterhub-singleuser`` process. The tests read the cluster through its HTTP API, as
kubectl would; they never reach into the emulator's memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
import requests
from hubclient import BrowserUser, RunningPlatform, free_port, wait_until_healthy

from clusterhub.spawner.kubeobjects import (
    make_namespace_name,
    parse_quantity,
    space_labels,
)
from tests.kube import CLUSTERHUB_IMAGE_USERS, pod_shared_dir
from tests.kube.chart import ChartRbac, render_chart
from tests.kube.fixtures import KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HUB_NAMESPACE = "hub-system"
PREFIX = "clusterhub-"
BIN = os.path.dirname(sys.executable)
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEST_HUB_CONFIG = """
# Every pod of the process-kubelet shares this machine's network: give each notebook its
# own port on loopback. A real cluster gives each pod its own address instead.
from clusterhub.ports import free_port

def _own_port(spawner):
    spawner.port = free_port()

c.KubeSpaceSpawner.pre_spawn_hook = _own_port
c.KubeSpaceSpawner.ip = "127.0.0.1"
c.KubeSpaceSpawner.cmd = [{singleuser!r}]
c.KubeSpaceSpawner.args = ["--ServerApp.allow_root=True"]
c.KubeSpaceSpawner.namespace_delete_timeout = 60
c.KubeSpaceSpawner.image_pull_secrets = ["registry-credentials"]
"""


class RunningKubeHub(RunningPlatform):
    """The hub as the Helm chart runs it (jupyterhub -f clusterhub's config), in kubernetes
    mode against the emulator; it starts its own proxy since there is no proxy pod here."""

    def __init__(
        self,
        root: str,
        cluster: KubeCluster,
        kubeconfig: str | None = None,
        space_roles: dict[str, dict[str, str]] | None = None,
    ):
        super().__init__(root, local_accounts=False)
        self.cluster = cluster
        self.space_roles = space_roles or {}
        # The hub's credentials: its ServiceAccount's (the chart's RBAC) when given.
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        # Put before the hub's command (e.g. to give it the cluster's names, as its pod has).
        self.command_prefix: list[str] = []
        self.admin_password = "a" * 40
        os.makedirs(os.path.join(self.data_dir, "hub"), exist_ok=True)
        config = os.path.join(root, "test_config.py")
        with open(config, "w") as f:
            f.write(TEST_HUB_CONFIG.format(singleuser=os.path.join(BIN, "jupyterhub-singleuser")))
        self.settings_file = os.path.join(root, "settings.json")
        settings = {
            "mode": "kubernetes",
            "data_dir": self.data_dir,
            "workshop_code": self.workshop_code,
            "admin_password": self.admin_password,
            "gateway_encrypt_key": "",
            "ip": "127.0.0.1",
            "port": self.port,
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "proxy_command": [
                os.path.join(CHECKOUT, "node_modules", ".bin", "configurable-http-proxy")
            ],
            "extra_config_file": config,
            "kubernetes": {
                "hub_namespace": HUB_NAMESPACE,
                "hub_name": "test-hub",
                "namespace_prefix": PREFIX,
                "notebook_image": "notebook:test",
                "cluster_image": "cluster:test",
                # With the chart's RBAC, the roles the hub binds in each space (as the chart
                # tells it); with the admin's credentials, none are needed.
                "space_roles": self.space_roles,
            },
        }
        with open(self.settings_file, "w") as f:
            json.dump(settings, f)

    def start(self, timeout: float = 60) -> RunningKubeHub:
        env = self.env()
        env.update(CLUSTERHUB_SETTINGS=self.settings_file, KUBECONFIG=self.kubeconfig)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        config = os.path.join(CHECKOUT, "clusterhub", "jupyterhub_config.py")
        self.log = open(os.path.join(self.root, "hub.log"), "ab")
        self.proc = subprocess.Popen(
            [*self.command_prefix, os.path.join(BIN, "jupyterhub"), "-f", config],
            cwd=os.path.join(self.data_dir, "hub"),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait_until_healthy(self.proc, f"{self.url}/hub/health", timeout):
            return self
        tail = self.log_tail()
        self.stop()  # and its proxy: nothing half-started stays behind
        raise RuntimeError("hub did not start: " + tail)

    def log_tail(self) -> str:
        with open(os.path.join(self.root, "hub.log"), errors="replace") as f:
            return "".join(f.readlines()[-40:])

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        code, self.proc = self.proc.returncode, None
        # The hub's own proxy, started in its session: the one whose arguments hold this
        # hub's port as a whole word (a substring could be another platform's, as 2800 is
        # part of 28001).
        for proc in psutil.process_iter():
            try:
                args = proc.cmdline()
                if "configurable-http-proxy" in " ".join(args) and str(self.port) in args:
                    proc.kill()
            except psutil.Error:
                pass
        return code


class Kubectl:
    """Reads the emulated cluster over HTTP, as kubectl would."""

    PATHS = {
        "pods": "/api/v1/namespaces/{ns}/pods",
        "serviceaccounts": "/api/v1/namespaces/{ns}/serviceaccounts",
        "resourcequotas": "/api/v1/namespaces/{ns}/resourcequotas",
        "limitranges": "/api/v1/namespaces/{ns}/limitranges",
        "services": "/api/v1/namespaces/{ns}/services",
        "secrets": "/api/v1/namespaces/{ns}/secrets",
        "configmaps": "/api/v1/namespaces/{ns}/configmaps",
        "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
        "networkpolicies": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
        "roles": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
        "rolebindings": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    }

    def __init__(self, cluster: KubeCluster):
        self.base = cluster.url
        self.headers = {"Authorization": f"Bearer {cluster.token}"}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.headers, timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.base + path, json=body, headers=self.headers, timeout=10)

    def names(self, kind: str, ns: str) -> set[str]:
        response = self.get(self.PATHS[kind].format(ns=ns))
        response.raise_for_status()
        return {item["metadata"]["name"] for item in response.json()["items"]}

    def items(self, kind: str, ns: str) -> list[dict]:
        return self.get(self.PATHS[kind].format(ns=ns)).json()["items"]

    def namespaces(self) -> dict[str, dict]:
        items = self.get("/api/v1/namespaces").json()["items"]
        return {ns["metadata"]["name"]: ns for ns in items}

    def space_of(self, username: str) -> str:
        for name, ns in self.namespaces().items():
            annotations = ns["metadata"].get("annotations", {})
            if annotations.get("hub.clusterhub.io/username") == username:
                return name
        raise AssertionError(f"no namespace for {username}")


@pytest.fixture(scope="module")
def cluster():
    workdir = tempfile.mkdtemp(prefix="kube-hub-")
    home = pod_shared_dir(os.path.join(workdir, "home"))
    kube = KubeCluster(
        workdir,
        image_users=CLUSTERHUB_IMAGE_USERS,
        base_env={"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": home},
    )
    try:
        kube.start()
        yield kube
    finally:
        kube.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def chart_rbac(cluster: KubeCluster) -> ChartRbac:
    """The chart's ServiceAccounts, ClusterRoles and bindings, installed as `helm install`
    would: the hub under test holds exactly the rights the chart gives it."""
    objects = render_chart("ch", HUB_NAMESPACE, "--set-string", "hub.workshopCode=open-sesame")
    return ChartRbac(cluster.url, cluster.token, objects, HUB_NAMESPACE).install()


@pytest.fixture(scope="module")
def hub(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("kubehub")
    rbac = chart_rbac(cluster)
    # What a platform admin does once: the registry credentials live in the hub's namespace.
    Kubectl(cluster).post(
        f"/api/v1/namespaces/{HUB_NAMESPACE}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry-credentials", "namespace": HUB_NAMESPACE},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "eyJhdXRocyI6IHt9fQ=="},
        },
    ).raise_for_status()
    kubeconfig = rbac.kubeconfig(rbac.service_account("hub"), root / "hub-kubeconfig")
    running = RunningKubeHub(str(root), cluster, kubeconfig, rbac.space_roles).start()
    running.rbac = rbac
    try:
        yield running
    finally:
        running.stop()


def own_namespace(kubectl: Kubectl, hub_name: str, username: str) -> str:
    """The namespace hub ``hub_name`` makes for ``username``, made beforehand (as if left
    from an earlier start)."""
    ns = make_namespace_name(PREFIX, username, reserved=[HUB_NAMESPACE])
    labels = space_labels(hub_name, username)
    kubectl.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
    ).raise_for_status()
    return ns


@contextlib.contextmanager
def another_hub(hub, name: str, extra_config: str = "", **kube_settings):
    """A second hub on the same cluster and credentials, called ``name`` (its spaces are its
    own), with other ``kubernetes`` settings and more config lines."""
    root = os.path.join(hub.root, name)
    os.makedirs(root)
    other = RunningKubeHub(root, hub.cluster, hub.kubeconfig, hub.space_roles)
    with open(other.settings_file) as f:
        settings = json.load(f)
    settings["kubernetes"].update(hub_name=name, **kube_settings)
    with open(other.settings_file, "w") as f:
        json.dump(settings, f)
    with open(os.path.join(root, "test_config.py"), "a") as f:
        f.write(extra_config)
    other.start()
    try:
        yield other
    finally:
        other.stop()


@pytest.fixture(scope="module")
def kubectl(cluster):
    return Kubectl(cluster)


def spawn(hub, name, **options) -> BrowserUser:
    user = BrowserUser(hub, name)
    user.login().raise_for_status()
    response = user.spawn(**options)
    assert response.status_code == 302, hub.log_tail()
    user.wait_ready(timeout=120)
    return user


EXPECTED_SPACE = {
    "resourcequotas": {"space-quota"},
    "limitranges": {"space-limits"},
    "serviceaccounts": {"default", "notebook"},  # "default" comes with every namespace
    "roles": {"notebook"},
    # the notebook's, and the hub's and the gateway's rights in the space (see space_roles)
    "rolebindings": {"notebook", "clusterhub-hub", "clusterhub-dask-gateway"},
    # what the user's server was started with, for the gateway (make_space_record)
    "configmaps": {"clusterhub-space"},
}


def test_two_users_each_get_a_namespace_and_a_working_notebook(hub, kubectl):
    # "a.b" and "a-b" would collide under a naive slug; each must get its own space.
    users = [spawn(hub, "a.b", profile="dask"), spawn(hub, "a-b", profile="dask")]
    spaces = {user.name: kubectl.space_of(user.name) for user in users}
    assert len(set(spaces.values())) == 2
    for user in users:
        ns = spaces[user.name]
        assert ns.startswith(PREFIX)
        labels = kubectl.namespaces()[ns]["metadata"]["labels"]
        assert labels["hub.clusterhub.io/name"] == "test-hub"
        for kind, names in EXPECTED_SPACE.items():
            assert kubectl.names(kind, ns) == names, (kind, ns)
        policies = kubectl.names("networkpolicies", ns)
        assert {"default-deny", "notebook-from-hub", "dns"} <= policies
        secrets = {s["metadata"]["name"]: s for s in kubectl.items("secrets", ns)}
        pulled = secrets["registry-credentials"]
        assert pulled["type"] == "kubernetes.io/dockerconfigjson"
        assert pulled["data"] == {".dockerconfigjson": "eyJhdXRocyI6IHt9fQ=="}
        pods = kubectl.items("pods", ns)
        assert [p["status"]["phase"] for p in pods] == ["Running"]
        assert pods[0]["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert pods[0]["spec"]["serviceAccountName"] == "notebook"
        # The profile's notebook size: guaranteed and limited, within the space's quota.
        resources = pods[0]["spec"]["containers"][0]["resources"]
        sizes = {
            kind: {name: parse_quantity(value) for name, value in values.items()}
            for kind, values in resources.items()
        }
        assert sizes == {
            "requests": {"cpu": 0.5, "memory": 2**30},
            "limits": {"cpu": 1, "memory": 2 * 2**30},
        }
        # JupyterLab answers through the hub's proxy, from the process the kubelet runs.
        status = user.session.get(f"{hub.url}/user/{user.name}/api/status")
        assert status.status_code == 200


def test_a_users_service_account_reaches_only_its_own_namespace(hub, kubectl):
    mine, theirs = kubectl.space_of("a.b"), kubectl.space_of("a-b")
    for role in kubectl.items("roles", mine):
        assert role["metadata"]["namespace"] == mine
    platform = {(HUB_NAMESPACE, role["service_account"]) for role in hub.space_roles.values()}
    for binding in kubectl.items("rolebindings", theirs):
        for subject in binding["subjects"]:
            where = subject.get("namespace", theirs)
            # No one from another user's space: only the hub and the gateway themselves.
            assert where == theirs or (where, subject["name"]) in platform, subject
    bindings = kubectl.get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings").json()
    for binding in bindings["items"]:
        for subject in binding.get("subjects", []):
            assert subject.get("namespace") not in (mine, theirs), "users get no cluster rights"


def test_the_platforms_tokens_act_only_in_the_spaces_the_hub_made(hub, kubectl):
    """The hub's and the gateway's ServiceAccount tokens (what their pods hold): pods,
    Secrets and RBAC of other namespaces are refused; the same in a user's space works."""
    space = kubectl.space_of("a.b")
    tokens = {
        component: hub.rbac.token(hub.rbac.service_account(component))
        for component in ("hub", "dask-gateway")
    }

    def call(component: str, method: str, path: str, body: dict | None = None) -> int:
        headers = {"Authorization": f"Bearer {tokens[component]}"}
        return requests.request(
            method, hub.cluster.url + path, json=body, headers=headers, timeout=10
        ).status_code

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "intruder"},
        "spec": {"containers": [{"name": "c", "image": "notebook:test", "command": ["true"]}]},
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}}
    # A role of the cluster's (made by its admin) that reads every Secret.
    rbac_api = "/apis/rbac.authorization.k8s.io/v1"
    reader = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
    created = kubectl.post(
        f"{rbac_api}/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "secret-reader"},
            "rules": [reader],
        },
    )
    assert created.status_code in (201, 409)
    take_over = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "take-over"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "secret-reader",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": HUB_NAMESPACE}],
    }
    for component in tokens:
        for method, path, body in (
            ("GET", "/api/v1/namespaces/kube-system/secrets", None),
            ("GET", "/api/v1/secrets", None),
            ("POST", "/api/v1/namespaces/kube-system/pods", pod),
            ("POST", "/api/v1/namespaces/kube-system/secrets", secret),
            ("POST", "/apis/apps/v1/namespaces/kube-system/deployments", {}),
            ("POST", f"{rbac_api}/namespaces/kube-system/rolebindings", take_over),
        ):
            assert call(component, method, path, body) == 403, (component, method, path)
    assert kubectl.names("secrets", "kube-system") == set()
    assert kubectl.names("pods", "kube-system") == set()
    # The controls: in a user's space the hub reads Secrets, and the gateway writes them.
    assert call("hub", "GET", f"/api/v1/namespaces/{space}/secrets") == 200
    assert call("dask-gateway", "POST", f"/api/v1/namespaces/{space}/secrets", secret) == 201
    assert call("dask-gateway", "DELETE", f"/api/v1/namespaces/{space}/secrets/probe") == 200
    assert call("dask-gateway", "GET", "/api/v1/pods") == 200, "its one watch over all pods"


def test_a_hub_restart_keeps_running_servers(hub, kubectl):
    ns = kubectl.space_of("a.b")
    pod = kubectl.items("pods", ns)[0]
    pids_before = hub.cluster.kubelet.pod_pids(ns, pod["metadata"]["name"])
    assert pids_before
    hub.stop()
    hub.start()
    user = BrowserUser(hub, "a.b")
    assert user.server_model()["servers"][""]["ready"]
    assert hub.cluster.kubelet.pod_pids(ns, pod["metadata"]["name"]) == pids_before
    user.login()
    user.wait_ready(timeout=60)
    assert user.session.get(f"{hub.url}/user/a.b/api/status").status_code == 200


def test_stop_removes_the_namespace_and_its_processes(hub, kubectl):
    ns = kubectl.space_of("a-b")
    pod = kubectl.items("pods", ns)[0]
    pids = hub.cluster.kubelet.pod_pids(ns, pod["metadata"]["name"])
    user = BrowserUser(hub, "a-b")
    user.stop_server(timeout=90)
    assert ns not in kubectl.namespaces()
    assert kubectl.get(f"/api/v1/namespaces/{ns}").status_code == 404
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_a_notebook_refused_by_a_quota_not_yet_counted_is_created_again(hub, kubectl):
    # On a busy cluster the quota controller counts a new namespace's quota a few seconds
    # late, and the API server refuses pods with "status unknown for quota" meanwhile.
    hub.cluster.emulator.quota_sync_delay = 4.0
    try:
        user = spawn(hub, "racer", profile="dask")
    finally:
        hub.cluster.emulator.quota_sync_delay = 0.2
    with open(os.path.join(hub.root, "hub.log"), errors="replace") as log:
        assert "not counted yet; creating the pod again" in log.read()
    ns = kubectl.space_of("racer")
    assert [p["status"]["phase"] for p in kubectl.items("pods", ns)] == ["Running"]
    user.stop_server(timeout=90)


def test_bad_profile_creates_nothing(hub, kubectl):
    before = set(kubectl.namespaces())
    user = BrowserUser(hub, "mallory")
    user.login().raise_for_status()
    response = user.spawn(profile="dask", worker_cores="64")
    assert response.status_code == 400
    assert "worker_cores: must be a whole number from 1 to 2" in response.text
    assert set(kubectl.namespaces()) == before


def test_the_spawn_page_streams_progress(hub, kubectl):
    user = BrowserUser(hub, "carol")
    user.login().raise_for_status()
    assert user.spawn(profile="dask").status_code == 302
    # What the spawn-pending page's EventSource reads.
    messages = []
    with user.session.get(
        f"{hub.url}/hub/api/users/carol/server/progress",
        headers={"X-XSRFToken": user.xsrf("/hub/")},
        stream=True,
        timeout=120,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                event = json.loads(line[len("data:") :])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    break
    ns = kubectl.space_of("carol")
    assert any(f"Preparing your space: namespace {ns}" in m for m in messages), messages
    assert any("ready" in m.lower() for m in messages), messages
    user.stop_server(timeout=90)


def test_names_are_checked_at_login_and_the_longest_gets_a_valid_namespace(hub, kubectl):
    refused = BrowserUser(hub, "zoë-ñandú")
    response = refused.login()
    assert response.status_code == 400 and "U+00EB" in response.text
    name = "z.o_e-" + "x" * 26  # 32 characters, every escaped kind
    user = spawn(hub, name, profile="dask")
    ns = kubectl.space_of(user.name)
    assert len(ns) <= 63 and ns.isascii() and ns.startswith(PREFIX)
    user.stop_server(timeout=90)
    assert ns not in kubectl.namespaces()


def _spawn_failure(user: BrowserUser) -> str:
    """Submit the form and return what the attendee is told once the start has failed."""
    response = user.spawn(profile="dask")
    page = response.text
    deadline = time.monotonic() + 60
    while response.status_code == 302 and time.monotonic() < deadline:
        progress = user.session.get(
            f"{user.base}/hub/api/users/{user.name}/server/progress",
            headers={"X-XSRFToken": user.xsrf("/hub/")},
            stream=True,
            timeout=60,
        )
        for line in progress.iter_lines(decode_unicode=True):
            if line.startswith("data:") and '"failed": true' in line:
                return json.loads(line[5:])["message"]
        time.sleep(0.5)
    return page


def test_a_namespace_the_hub_did_not_make_is_never_taken_over(hub, kubectl):
    # Another team's namespace happens to have the name user "ws2" would get.
    ns = make_namespace_name(PREFIX, "ws2", reserved=[HUB_NAMESPACE])
    kubectl.post(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": "b"}},
        },
    ).raise_for_status()
    kubectl.post(
        f"/api/v1/namespaces/{ns}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "their-key"}, "data": {}},
    ).raise_for_status()
    user = BrowserUser(hub, "ws2")
    user.login().raise_for_status()
    told = _spawn_failure(user)
    assert f"namespace {ns} already exists and was not made by this hub for ws2" in told, told
    time.sleep(3)  # the hub's clean-up after a failed start has run
    namespace = kubectl.get(f"/api/v1/namespaces/{ns}").json()
    assert namespace["metadata"]["labels"]["team"] == "b"
    assert "deletionTimestamp" not in namespace["metadata"], "never deleted"
    assert kubectl.names("secrets", ns) == {"their-key"}
    assert kubectl.names("pods", ns) == set(), "nothing of the hub's was put there"


def test_a_start_replaces_the_settings_a_kept_namespace_still_holds(hub, kubectl):
    # As after an interrupted stop: keeper's own namespace (this hub's, for keeper) still has
    # a quota from before. The hub, with the chart's rights, replaces it and starts.
    ns = own_namespace(kubectl, "test-hub", "keeper")
    stale = {"hard": {"pods": "1"}}
    kubectl.post(
        f"/api/v1/namespaces/{ns}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "space-quota"},
            "spec": stale,
        },
    ).raise_for_status()
    # ... and a record of a far larger profile, which the gateway must never go by.
    huge = {"workers": 64, "worker_cores": 64, "worker_memory_gib": 256}
    kubectl.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "clusterhub-space"},
            "data": {"limits": json.dumps(huge)},
        },
    ).raise_for_status()
    user = spawn(hub, "keeper", profile="dask")
    (quota,) = kubectl.items("resourcequotas", ns)
    assert quota["spec"] != stale and quota["spec"]["hard"]["pods"] != "1"
    (record,) = kubectl.items("configmaps", ns)
    assert json.loads(record["data"]["limits"]) == {
        "workers": 8,
        "worker_cores": 2,
        "worker_memory_gib": 4,
    }
    user.stop_server(timeout=90)


# Run in the notebook's kernel: who it is, and whether its home (a fresh disk) is its own.
HOME_ON_A_DISK = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
path = "/home/jovyan/notes.txt"
try:
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("kept")
    answer = open(path).read()
except OSError as exc:
    answer = exc.strerror
print(json.dumps({"uid": status["Uid"].split()[0], "groups": status["Groups"].split(),
                  "home": answer, "group": os.stat("/home/jovyan").st_gid}))
"""


def test_the_notebook_user_owns_its_home_on_a_fresh_disk_and_keeps_it(cluster, hub, kubectl):
    # With home storage each home is a PersistentVolumeClaim: a new cloud disk is root's
    # (0755), and the image's user (1000) can only write it through the pod's fsGroup.
    ns = None
    try:
        with another_hub(hub, "disk-hub", home_storage={"size": "1Gi"}) as disk_hub:
            user = spawn(disk_hub, "disky", profile="dask")
            ns = kubectl.space_of("disky")
            kernel = user.kernel()
            try:
                first = json.loads(kernel.execute(HOME_ON_A_DISK).strip().splitlines()[-1])
            finally:
                kernel.close()
            assert first == {"uid": "1000", "groups": ["1000"], "home": "kept", "group": 1000}
            (pod,) = kubectl.items("pods", ns)
            assert pod["spec"]["securityContext"]["fsGroup"] == 1000

            # Stopped, the namespace keeps only the claim; the next start finds the file.
            user.stop_server(timeout=90)
            assert kubectl.names("pods", ns) == set()
            claims = kubectl.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims").json()
            assert len(claims["items"]) == 1
            user = spawn(disk_hub, "disky", profile="dask")
            kernel = user.kernel()
            try:
                again = json.loads(kernel.execute(HOME_ON_A_DISK).strip().splitlines()[-1])
            finally:
                kernel.close()
            assert again["home"] == "kept"
            user.stop_server(timeout=90)
    finally:
        if ns is not None:
            requests.delete(
                f"{cluster.url}/api/v1/namespaces/{ns}",
                headers={"Authorization": f"Bearer {cluster.token}"},
                timeout=10,
            )


def test_a_previous_namespace_still_terminating_does_not_use_up_the_start_timeout(hub, kubectl):
    # ghost's previous namespace, held terminating by a finalizer for longer than the whole
    # start_timeout of this hub: the wait happens before start(), which JupyterHub times.
    ns = own_namespace(kubectl, "slow-hub", "ghost")
    held = f"/api/v1/namespaces/{ns}/configmaps/held"
    kubectl.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "held", "finalizers": ["test.clusterhub.io/hold"]}},
    ).raise_for_status()
    headers = {**kubectl.headers, "Content-Type": "application/merge-patch+json"}
    requests.delete(f"{kubectl.base}/api/v1/namespaces/{ns}", headers=kubectl.headers, timeout=10)
    assert kubectl.namespaces()[ns]["status"]["phase"] == "Terminating"
    with another_hub(hub, "slow-hub", "c.KubeSpaceSpawner.start_timeout = 15\n") as slow:
        user = BrowserUser(slow, "ghost")
        user.login().raise_for_status()
        assert user.spawn(profile="dask").status_code == 302
        time.sleep(20)  # longer than start_timeout
        assert not user.server_model()["servers"][""]["ready"]
        requests.patch(
            kubectl.base + held,
            data='{"metadata": {"finalizers": null}}',
            headers=headers,
            timeout=10,
        ).raise_for_status()
        user.wait_ready(timeout=90)
        with open(os.path.join(slow.root, "hub.log"), errors="replace") as log:
            assert "Waiting for ghost's previous namespace to be gone" in log.read()
        user.stop_server(timeout=90)
