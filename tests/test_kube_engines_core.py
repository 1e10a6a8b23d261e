"""The Clusters core's Kubernetes engines, against the emulator and the process-kubelet.

A user's space is made as KubeSpaceSpawner makes it (the same pure builders, sent over HTTP as
the hub would); its IPyParallel controller and engines run for real. The core reaches the API
only as a notebook pod does - HTTPS to the kubelet's front of the API server with a
ServiceAccount token and the cluster CA - in-process with those credentials, and from inside
a pod, where the kubelet mounts them.

Everything listens on 127.0.0.1 at the fixed IPyParallel ports of
``clusterhub.spawner.kubeobjects``: one space with engines at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clusterhub.engines.kube import (
    InClusterApi,
    KubeIPyParallelEngine,
    KubeSpace,
    kube_space_from_env,
)
from clusterhub.labextension.core import Clusters, UserError
from clusterhub.profiles import validate_options, validate_profiles
from clusterhub.spawner import kubeobjects as ko
from clusterhub.spawner.kubespace import (
    NOTEBOOK_SERVICE_ACCOUNT,
    make_space_objects,
    notebook_limits_env,
)
from tests.kube import busy_ports, pod_shared_dir, wait_for
from tests.kube.fixtures import KubeCluster, uts_available

pytestmark = pytest.mark.slow

BIN = os.path.dirname(sys.executable)
CLUSTER_IMAGE = "cluster:test"
NAMESPACE = "clusterhub-core"
# Small on purpose: the limit is what the tests run into.
PROFILE = validate_profiles(
    [
        {
            "slug": "ipp-small",
            "engines": ["ipyparallel"],
            "workers": {"default": 1, "max": 3},
            "worker_cores": {"default": 1, "max": 1},
            "worker_memory_gib": {"default": 1, "max": 1},
        },
        {
            "slug": "spark-small",
            "engines": ["spark"],
            "workers": {"default": 1, "max": 2},
            "worker_cores": {"default": 1, "max": 1},
            "worker_memory_gib": {"default": 1, "max": 1},
        },
    ]
)
IPP_PORTS = tuple(ko.IPYPARALLEL_PORTS.values())

# Where each kind the space builder returns is created, as the hub does it.
_PATHS = {
    "ResourceQuota": "/api/v1/namespaces/{ns}/resourcequotas",
    "LimitRange": "/api/v1/namespaces/{ns}/limitranges",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
}


class Admin:
    """The cluster over HTTP with the admin's token, as the hub or kubectl would use it."""

    def __init__(self, cluster: KubeCluster):
        self.base = cluster.url
        self.headers = {"Authorization": f"Bearer {cluster.token}"}

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(self.base + path, headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.base + path, json=body, headers=self.headers, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def log(self, ns: str, pod: str) -> str:
        path = f"{self.base}/api/v1/namespaces/{ns}/pods/{pod}/log"
        return requests.get(path, headers=self.headers, timeout=10).text

    def make_space(self, ns: str, slug: str, image: str = CLUSTER_IMAGE) -> None:
        """The namespace with everything KubeSpaceSpawner puts in it but the notebook pod."""
        profile = next(p for p in PROFILE if p["slug"] == slug)
        self.post("/api/v1/namespaces", {"metadata": {"name": ns}})
        objects = make_space_objects(
            ns,
            hub_namespace="hub",
            profile=profile,
            options=validate_options(PROFILE, {"profile": slug}),
            cluster_image=image,
            ipyparallel_key="ab" * 32,
        )
        for obj in objects:
            self.post(_PATHS[obj["kind"]].format(ns=ns), obj)
            if obj["kind"] == "ResourceQuota":
                # As the spawner does: nothing the quota covers is admitted until counted.
                quota = f"/api/v1/namespaces/{ns}/resourcequotas/{obj['metadata']['name']}"
                wait_for(lambda q=quota: self.get(q).get("status", {}).get("hard"), 10, quota)

    def replicas(self, ns: str) -> dict[str, int]:
        items = self.get(f"/apis/apps/v1/namespaces/{ns}/deployments")["items"]
        return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}

    def running_pods(self, ns: str, selector: str) -> list[str]:
        items = self.get(f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]
        return sorted(
            p["metadata"]["name"]
            for p in items
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        )

    def scale_patches(self, cluster: KubeCluster) -> int:
        return cluster.request_counts().get("patch deployments/scale", 0)


def notebook_environment(ns: str, slug: str) -> dict[str, str]:
    """What KubeSpaceSpawner gives the notebook of a space (its get_env, engine part)."""
    profile = next(p for p in PROFILE if p["slug"] == slug)
    env = ko.make_notebook_env(ns, engines=["dask", *profile["engines"]])
    env.update(notebook_limits_env(profile))
    return env


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster() -> Iterator[KubeCluster]:
    # Fixed ports: engines of an earlier test may still be going away; anything else is a
    # collision with another run on this machine, which no retry can fix.
    try:
        wait_for(lambda: not busy_ports(IPP_PORTS), 20, "the IPyParallel ports to be free")
    except AssertionError:
        pytest.fail(f"ports {busy_ports(IPP_PORTS)} are in use: the IPyParallel engines need them")
    workdir = tempfile.mkdtemp(prefix="kube-core-")
    home = pod_shared_dir(os.path.join(workdir, "home"))
    kube = KubeCluster(
        workdir,
        # With a UTS namespace per pod an engine's hostname is its pod's name.
        uts=uts_available(),
        image_entrypoints={CLUSTER_IMAGE: [sys.executable, "-m", "clusterhub.engines.entrypoint"]},
        base_env={
            "PATH": BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "CLUSTERHUB_BIND_HOST": "127.0.0.1",
        },
    )
    try:
        kube.start()
        yield kube
    finally:
        kube.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(cluster: KubeCluster) -> Admin:
    return Admin(cluster)


@pytest.fixture(scope="module")
def credentials(cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> InClusterApi:
    """The in-cluster credentials a notebook pod gets (token and CA), as files."""
    assert cluster.kubelet is not None and cluster.kubelet.api_front is not None
    front = cluster.kubelet.api_front
    directory = tmp_path_factory.mktemp("serviceaccount")
    (directory / "token").write_text(cluster.token)
    (directory / "ca.crt").write_bytes(front.ca_pem)
    return InClusterApi(
        f"https://{front.host}:{front.port}",
        token_file=str(directory / "token"),
        ca_file=str(directory / "ca.crt"),
    )


@pytest.fixture(scope="module")
def space(admin: Admin, cluster: KubeCluster) -> str:
    """A space whose IPyParallel controller and one engine run (real processes)."""
    admin.make_space(NAMESPACE, "ipp-small")
    selector = f"{ko.ENGINE_LABEL}=ipyparallel"
    wait_for(lambda: len(admin.running_pods(NAMESPACE, selector)) == 2, 60, "controller + engine")
    return NAMESPACE


@pytest.fixture(scope="module")
def client_file(admin: Admin, space: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The IPyParallel client file as mounted in the notebook pod, but naming the controller
    by 127.0.0.1: this test process is not a pod, so Service names do not resolve here."""
    import base64

    secret = admin.get(f"/api/v1/namespaces/{space}/secrets/{ko.IPYPARALLEL_SECRET_NAME}")
    info = json.loads(base64.b64decode(secret["data"][ko.IPYPARALLEL_CLIENT_FILE]))
    assert info["location"] == f"ipcontroller.{space}.svc"
    info["location"] = "127.0.0.1"
    path = tmp_path_factory.mktemp("ipp") / ko.IPYPARALLEL_CLIENT_FILE
    path.write_text(json.dumps(info))
    return str(path)


@pytest.fixture
def clusters(space: str, credentials: InClusterApi, client_file: str) -> Iterator[Clusters]:
    env = notebook_environment(space, "ipp-small")
    env["CLUSTERHUB_IPP_CLIENT_FILE"] = client_file
    kube_space = kube_space_from_env(env, api=credentials)
    assert kube_space is not None
    core = Clusters(
        space=kube_space,
    )
    try:
        yield core
    finally:
        core.close()


def running_with(core: Clusters, workers: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        entry = core.describe("ipyparallel", "default")
        return entry if entry["state"] == "running" and entry["workers"] == workers else None

    return check


# ------------------------------------------------------------------------------- tests


def test_a_notebook_pod_gets_the_kubernetes_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLUSTERHUB_SPACE", "CLUSTERHUB_NAMESPACE", "CLUSTERHUB_ENGINES"):
        monkeypatch.delenv(name, raising=False)
    assert not isinstance(Clusters().space, KubeSpace)  # local: no namespace in sight

    for key, value in notebook_environment("clusterhub-alice", "ipp-small").items():
        monkeypatch.setenv(key, value)
    core = Clusters()
    assert isinstance(core.space, KubeSpace) and core.space.namespace == "clusterhub-alice"
    assert core.local_engines() == ["ipyparallel"]
    assert core.limits() == {"workers": 3, "worker_cores": 1, "worker_memory_gib": 1}
    assert isinstance(core._engine("ipyparallel"), KubeIPyParallelEngine)
    with pytest.raises(UserError) as refused:
        core.describe("spark", "default")
    assert refused.value.status == 404 and "no spark engine" in str(refused.value)

    # A local space wins: a local notebook never talks to a cluster.
    monkeypatch.setenv("CLUSTERHUB_SPACE", "/nonexistent/spaces/alice")
    assert kube_space_from_env() is None


def test_describe_scale_and_stop_through_the_scale_subresource(
    clusters: Clusters, admin: Admin, cluster: KubeCluster, space: str
) -> None:
    entry = wait_for(running_with(clusters, 1), 30, "one engine")
    assert entry["engine"] == "ipyparallel" and entry["name"] == "default"
    assert entry["requested_workers"] == 1 and "error" not in entry
    assert [e["engine"] for e in clusters.list_engines()] == ["ipyparallel"]

    patches = admin.scale_patches(cluster)
    answer = clusters.update("ipyparallel", "default", {"workers": 2})
    assert answer["requested_workers"] == 2
    assert admin.scale_patches(cluster) == patches + 1  # one PATCH of deployments/scale
    assert admin.replicas(space) == {"ipcontroller": 1, "ipengine": 2}
    wait_for(running_with(clusters, 2), 60, "two engines")

    # The second engine is a real one: it registers and runs tasks, and the records say
    # which engine pod ran each (its hostname, with a UTS namespace per pod).
    import ipyparallel as ipp

    client = ipp.Client(clusters.space.environ["CLUSTERHUB_IPP_CLIENT_FILE"], timeout=30)
    try:
        client.wait_for_engines(2, timeout=60)
        # A builtin: the engines cannot import this test module.
        assert client.load_balanced_view().map_sync(hex, range(20)) == [hex(x) for x in range(20)]
    finally:
        client.close()
    engines = admin.running_pods(space, f"{ko.ENGINE_LABEL}=ipyparallel,{ko.ROLE_LABEL}=engine")
    assert len(engines) == 2

    def all_named() -> dict[str, Any] | None:
        records = clusters.task_records("ipyparallel", "default")
        named = sum(records["counts"].values())
        return records if named >= 20 else None

    records = wait_for(all_named, 30, "20 task records with hostnames", interval=0.5)
    if cluster.kubelet.uts:
        expected = set(engines)
        assert records["place"] == "host"
    else:  # the engine pods share this machine's hostname: named by engine instead
        expected = {f"engine {i}" for i in range(2)}
        assert records["place"] == "worker"
    assert set(records["counts"]) <= expected and set(records["workers"].values()) <= expected

    clusters.stop("ipyparallel", "default")
    assert admin.replicas(space) == {"ipcontroller": 0, "ipengine": 0}
    assert clusters.describe("ipyparallel", "default")["state"] == "stopped"
    patches = admin.scale_patches(cluster)
    with pytest.raises(UserError) as refused:
        clusters.scale("ipyparallel", "default", 1)
    assert refused.value.status == 409 and "stopped" in str(refused.value)
    assert admin.scale_patches(cluster) == patches
    assert admin.replicas(space) == {"ipcontroller": 0, "ipengine": 0}

    # Started again (Engine.start), as the spawner left it.
    clusters._engine("ipyparallel").start(1)
    wait_for(running_with(clusters, 1), 60, "the engine back")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"workers": -1}, 400, "workers: must be a whole number from 0 to 3, not -1"),
        ({"workers": 10**9}, 400, "workers: must be a whole number from 0 to 3"),
        ({"workers": "three"}, 400, "workers: must be a whole number from 0 to 3, not 'three'"),
        ({"workers": True}, 400, "workers: must be a whole number"),
        ({"workers": 2.0}, 400, "workers: must be a whole number"),
        ({"workers": 4}, 422, "workers: 4 is over your profile's limit of 3"),
        ({}, 400, 'body: give either {"workers": n}'),
        ({"adapt": {"minimum": 1}}, 400, "adapt: only Dask clusters adapt"),
        ("three", 400, "body: must be a JSON object"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    clusters: Clusters, admin: Admin, cluster: KubeCluster, space: str, body, status, words
) -> None:
    before = admin.replicas(space)
    patches = admin.scale_patches(cluster)
    with pytest.raises(UserError) as refused:
        clusters.update("ipyparallel", "default", body)
    assert refused.value.status == status
    assert words in str(refused.value)
    assert admin.scale_patches(cluster) == patches
    assert admin.replicas(space) == before


def test_stuck_pods_and_refusals_are_reported(
    admin: Admin, credentials: InClusterApi, tmp_path: Path
) -> None:
    # An image the node cannot run: its pods are stuck, and the listing says so.
    admin.make_space("clusterhub-stuck", "spark-small", image="unknown:image")
    env = notebook_environment("clusterhub-stuck", "spark-small")
    core = Clusters(space=kube_space_from_env(env, api=credentials))

    def failed() -> dict[str, Any] | None:
        entry = core.describe("spark", "default")
        return entry if entry["state"] == "failed" else None

    entry = wait_for(failed, 30, "the stuck master to be reported")
    assert "spark-master pod spark-master-" in entry["error"]
    # The node has no such program: the container fails to start and is restarted.
    assert "CrashLoopBackOff" in entry["error"]
    assert entry["workers"] == 0 and entry["requested_workers"] == 1
    assert entry["dashboard"] == "http://spark-master.clusterhub-stuck.svc:8080"

    # A namespace without the Deployments: the listing names the problem, a request is 503.
    gone = Clusters(
        space=kube_space_from_env(
            notebook_environment("clusterhub-gone", "spark-small"), credentials
        )
    )
    (listed,) = gone.list_engines()
    assert listed["state"] == "unavailable"
    assert (
        "the Deployment spark-master is missing from namespace clusterhub-gone" in listed["error"]
    )
    with pytest.raises(UserError) as refused:
        gone.scale("spark", "default", 1)
    assert refused.value.status == 409 and "missing" in str(refused.value)

    # A token the API server does not accept: its refusal, in its own words.
    (tmp_path / "token").write_text("not-a-token")
    wrong = InClusterApi(
        credentials.base_url, token_file=str(tmp_path / "token"), ca_file=credentials.ca_file
    )
    core = Clusters(space=kube_space_from_env(env, api=wrong))
    with pytest.raises(UserError) as refused:
        core.describe("spark", "default")
    assert refused.value.status == 503 and "refused GET" in str(refused.value)
    assert "401" in str(refused.value)

    # Outside a pod there is no API to reach, and the error says why.
    outside = Clusters(space=KubeSpace("clusterhub-stuck", ("spark",), environ={}))
    (listed,) = outside.list_engines()
    assert "KUBERNETES_SERVICE_HOST" in listed["error"]


# A notebook's kernel or server, inside its pod: nothing but the environment and the mounts.
IN_POD = """
import json, os
from clusterhub.labextension.core import Clusters

core = Clusters()
answer = {"mounted": os.path.isdir("/var/run/secrets/kubernetes.io/serviceaccount")}
answer["before"] = core.list_engines()
if answer["mounted"]:
    answer["scaled"] = core.scale("ipyparallel", "default", 2)
print("RESULT " + json.dumps(answer))
"""


@pytest.mark.parametrize("automount", [True, False])
def test_a_notebook_pod_scales_its_engines_with_its_service_account(
    clusters: Clusters, admin: Admin, space: str, automount: bool
) -> None:
    volume, mount = ko.make_ipyparallel_notebook_volume()
    name = f"notebook-{str(automount).lower()}"
    pod = {
        "metadata": {"name": name, "labels": ko.notebook_labels()},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": NOTEBOOK_SERVICE_ACCOUNT,
            # KubeSpaceSpawner turns it on for the notebook; off, the pod has no token.
            "automountServiceAccountToken": automount,
            "volumes": [volume],
            "containers": [
                {
                    "name": "notebook",
                    "image": "notebook:test",
                    "command": [sys.executable, "-c", IN_POD],
                    "env": [
                        {"name": k, "value": v}
                        for k, v in notebook_environment(space, "ipp-small").items()
                    ],
                    "volumeMounts": [mount],
                }
            ],
        },
    }
    admin.post(f"/api/v1/namespaces/{space}/pods", pod)

    def finished() -> str | None:
        phase = admin.get(f"/api/v1/namespaces/{space}/pods/{name}")["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, 60, f"pod {name} to finish")
    log = admin.log(space, name)
    assert phase == "Succeeded", log[-3000:]
    (line,) = [x for x in log.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    (before,) = result["before"]
    assert result["mounted"] is automount
    if automount:
        assert before["state"] == "running" and before["workers"] == 1
        assert result["scaled"]["requested_workers"] == 2
        assert admin.replicas(space)["ipengine"] == 2
        clusters.scale("ipyparallel", "default", 1)
        wait_for(running_with(clusters, 1), 60, "back to one engine")
    else:
        assert before["state"] == "unavailable"
        assert "cannot read the ServiceAccount token" in before["error"]
        assert "automountServiceAccountToken" in before["error"]
        assert admin.replicas(space)["ipengine"] == 1
