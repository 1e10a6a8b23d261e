"""Spark and IPyParallel on Kubernetes, from a user's kernel and Clusters API, through the hub.

A real hub (KubeSpaceSpawner) against the emulator; the process-kubelet runs the notebook pod
(a real ``jupyterhub-singleuser``) and the engine pods (real Spark JVMs, real IPyParallel
processes), each pod in its own UTS namespace when possible, so that a hostname names a pod.
The user's kernel runs in the notebook pod and finds its engines through the environment the
spawner gave it; the Clusters REST API of the user's server scales the engines' Deployments
with the pod's own ServiceAccount credentials, which the kubelet mounts as a real one does.

Engines listen at the fixed ports of ``clusterhub.spawner.kubeobjects`` on the machine's
loopback: one Spark space at a time, and the ports must be free.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gatewaykube import IMAGE_ENTRYPOINTS, prepare_hub_namespace
from hubclient import BrowserUser
from test_kube_spawner import Kubectl, RunningKubeHub, spawn

from clusterhub.spawner import kubeobjects as ko
from tests.kube import (
    CLUSTERHUB_IMAGE_USERS,
    POD_API_CLIENT,
    busy_ports,
    pod_shared_dir,
    wait_for,
)
from tests.kube.fixtures import KubeCluster, uts_available

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = os.path.dirname(sys.executable)
API = "clusterhub/api/clusters"
SPARK_PORTS = (ko.SPARK_MASTER_PORT, ko.SPARK_MASTER_UI_PORT, ko.SPARK_WORKER_UI_PORT)
IPP_PORTS = tuple(ko.IPYPARALLEL_PORTS.values())

# What a user types in the workshop's Spark notebook: no arguments anywhere.
SPARK_SESSION = """
import json
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
total = sc.parallelize(range(1, 101), 4).map(lambda x: x * x).sum()
print(json.dumps({"master": sc.master, "sum": total}))
"""
SPARK_EXECUTORS = """
import time
deadline = time.monotonic() + 180
while len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1 < 2:  # minus the driver
    assert time.monotonic() < deadline, "no second executor"
    time.sleep(0.5)
# Half a second per partition: tasks of no time at all may all go to the executor that
# offered first, and the job is to use both.
def slow_sum(numbers):
    time.sleep(0.5)
    return [sum(x + 1 for x in numbers)]
print(json.dumps({"sum": sum(sc.parallelize(range(1000), 8).mapPartitions(slow_sum).collect())}))
"""
# Also no arguments: the client file is mounted where IPython's default profile keeps it.
IPP_MAP = """
import json, os
import ipyparallel as ipp
rc = ipp.Client()
rc.wait_for_engines({n}, timeout=90, interactive=False)
def host(i):
    import socket  # engines have none of the kernel's imports
    return socket.gethostname()
hosts = rc.load_balanced_view().map_sync(host, range(30))
print(json.dumps({{"engines": len(rc.ids), "hosts": sorted(set(hosts))}}))
"""


# The notebook image's home, as a volume (hostPath here, a PVC with home storage on): the
# profile's security dir is mounted inside it, as on a cluster (see spawner.kube).
HOME_CONFIG = """
c.KubeSpaceSpawner.notebook_home = {home!r}
c.KubeSpaceSpawner.volumes = [
    {{"name": "home", "hostPath": {{"path": {home!r}, "type": "Directory"}}}}
]
c.KubeSpaceSpawner.volume_mounts = [{{"name": "home", "mountPath": {home!r}}}]
"""


def ports_free(ports: tuple[int, ...]) -> None:
    try:
        wait_for(lambda: not busy_ports(ports), 20, "the fixed engine ports to be free")
    except AssertionError:
        pytest.fail(f"ports {busy_ports(ports)} are in use: the engines need them (fixed ports)")


def last_json(output: str) -> dict[str, Any]:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="kube-kernels-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def home(workdir: str) -> str:
    return pod_shared_dir(os.path.join(workdir, "home"))


@pytest.fixture(scope="module")
def cluster(workdir: str, home: str) -> Iterator[KubeCluster]:
    tmp = pod_shared_dir(os.path.join(workdir, "tmp"))
    kube = KubeCluster(
        workdir,
        uts=uts_available(),
        image_entrypoints=IMAGE_ENTRYPOINTS,
        image_users=CLUSTERHUB_IMAGE_USERS,
        base_env={
            "PATH": BIN + os.pathsep + os.environ["PATH"],
            "HOME": home,
            # Every pod's address is 127.0.0.1 here (shared loopback): engines bind there,
            # and so does a kernel's Spark driver, as it would bind its pod's address.
            "CLUSTERHUB_BIND_HOST": "127.0.0.1",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "JAVA_TOOL_OPTIONS": f"-Djava.io.tmpdir={tmp} -XX:-UsePerfData",
            "SPARK_LOCAL_DIRS": tmp,
        },
    )
    try:
        kube.start()
        yield kube
    finally:
        kube.stop()


@pytest.fixture(scope="module")
def kubectl(cluster: KubeCluster) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="module")
def hub(
    cluster: KubeCluster, kubectl: Kubectl, home: str, tmp_path_factory
) -> Iterator[RunningKubeHub]:
    prepare_hub_namespace(kubectl)
    running = RunningKubeHub(str(tmp_path_factory.mktemp("kernelhub")), cluster)
    with open(os.path.join(running.root, "test_config.py"), "a") as f:
        f.write(HOME_CONFIG.format(home=home))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def clusters(user: BrowserUser) -> dict[str, Any]:
    response = user.server_api("GET", API)
    assert response.status_code == 200, response.text
    return response.json()


def engine_entry(user: BrowserUser, engine: str) -> dict[str, Any]:
    (entry,) = [c for c in clusters(user)["clusters"] if c["engine"] == engine]
    return entry


def entry_with(user: BrowserUser, engine: str, **wanted: Any) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        entry = engine_entry(user, engine)
        return entry if all(entry.get(k) == v for k, v in wanted.items()) else None

    return check


def worker_replicas(kubectl: Kubectl, ns: str, deployment: str) -> int:
    got = kubectl.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}")
    got.raise_for_status()
    return got.json()["spec"]["replicas"]


def worker_image(kubectl: Kubectl, ns: str, deployment: str) -> str:
    got = kubectl.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}")
    got.raise_for_status()
    return got.json()["spec"]["template"]["spec"]["containers"][0]["image"]


# From a kernel, with the pod's ServiceAccount token (what any attendee's code can read).
REWRITE_ENGINE = (
    POD_API_CLIENT
    + """
def patch(path, body):
    return call("PATCH", path, body, "application/strategic-merge-patch+json")
engine = f"/apis/apps/v1/namespaces/{ns}/deployments/ipengine"
evil = [{"name": "ipengine", "image": "evil"}]
containers = {"spec": {"template": {"spec": {"containers": evil}}}}
print(json.dumps({
    "image": patch(engine, containers),
    "labels": patch(engine, {"metadata": {"labels": {"owned": "by-me"}}}),
    "scale": patch(engine + "/scale", {"spec": {"replicas": 2}}),
}))
"""
)


def refusals_change_nothing(user: BrowserUser, kubectl: Kubectl, engine: str, deployment: str):
    """Bad bodies through the hub: refused with the field and range, the Deployment as it was."""
    ns = kubectl.space_of(user.name)
    before = worker_replicas(kubectl, ns, deployment)
    limit = clusters(user)["limits"]["workers"]
    for body, status, words in (
        ({"workers": -1}, 400, f"from 0 to {limit}, not -1"),
        ({"workers": 10**9}, 400, f"from 0 to {limit}"),
        ({"workers": "three"}, 400, f"from 0 to {limit}, not 'three'"),
        ({"workers": limit + 1}, 422, f"over your profile's limit of {limit}"),
    ):
        response = user.server_api("PUT", f"{API}/{engine}/default", json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["message"]
    response = user.server_api("PUT", f"{API}/{engine}/default", data=b"")
    assert response.status_code == 400 and "body" in response.json()["message"]
    assert worker_replicas(kubectl, ns, deployment) == before


@pytest.mark.spark
def test_a_kernel_runs_spark_on_its_space_and_the_api_scales_the_workers(
    hub: RunningKubeHub, kubectl: Kubectl
) -> None:
    ports_free(SPARK_PORTS)
    user = spawn(hub, "sparky", profile="dask-spark", workers="1")
    kernel = user.kernel()
    try:
        ns = kubectl.space_of("sparky")
        listed = clusters(user)
        assert listed["limits"] == {"workers": 4, "worker_cores": 2, "worker_memory_gib": 4}
        assert [c["engine"] for c in listed["clusters"]] == ["spark"]
        entry = wait_for(entry_with(user, "spark", state="running", workers=1), 90, "Spark")
        assert entry["dashboard"] == f"http://spark-master.{ns}.svc:8080"
        wait_for(entry_with(user, "spark", cores=1), 60, "the worker registered")

        # A driver JVM and its executors starting cold: minutes on a loaded 2-core machine.
        first = last_json(kernel.execute(SPARK_SESSION, timeout=300))
        assert first == {"master": f"spark://spark-master.{ns}.svc:7077", "sum": 338350}

        refusals_change_nothing(user, kubectl, "spark", "spark-worker")
        response = user.server_api("PUT", f"{API}/spark/default", json={"workers": 2})
        assert response.status_code == 200, response.text
        assert response.json()["requested_workers"] == 2
        assert worker_replicas(kubectl, ns, "spark-worker") == 2
        # A second real worker registers with the master: two workers, two cores.
        wait_for(entry_with(user, "spark", state="running", workers=2, cores=2), 90, "2 workers")

        # The running session gets an executor on the new worker, and a job uses both.
        second = last_json(kernel.execute(SPARK_EXECUTORS, timeout=240))
        assert second == {"sum": sum(range(1, 1001))}

        last: list[dict[str, Any]] = []

        def both_executors() -> dict[str, Any] | None:
            response = user.server_api("GET", f"{API}/spark/default/tasks")
            assert response.status_code == 200, response.text
            records = response.json()
            last[:] = [{k: records[k] for k in ("workers", "unreachable_apps")}]
            return records if len(records["workers"]) >= 2 else None

        # The driver answers from the kernel's JVM, slowly on a loaded machine.
        try:
            records = wait_for(both_executors, 90, "task records from both executors")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last answer: {last}") from None
        # The driver's REST API names each task's host by the address its worker advertises:
        # 127.0.0.1 for both worker pods here, this machine. So the view places each task on
        # its executor instead: two of them, never one bar.
        assert records["place"] == "worker"
        executors = {r["hostname"] for r in records["records"]}
        assert len(executors) == 2 and all(e.startswith("executor ") for e in executors)
        assert executors == set(records["workers"].values())
        assert sum(records["counts"].values()) == len(records["records"]) >= 12
    finally:
        kernel.close()
        user.stop_server(timeout=120)
    assert kubectl.get(f"/api/v1/namespaces/{ns}").status_code == 404


def test_a_kernel_maps_over_ipyparallel_engines_and_the_api_scales_them(
    hub: RunningKubeHub, kubectl: Kubectl, cluster: KubeCluster, home: str
) -> None:
    ports_free(IPP_PORTS)
    user = spawn(hub, "ippy", profile="dask-ipyparallel", workers="1")
    kernel = user.kernel()
    try:
        ns = kubectl.space_of("ippy")
        # The profile's directories were made in the home volume before the notebook started
        # (by its init container, as the user), the Secret then mounted into the last one.
        security = os.path.join(home, ".ipython", "profile_default", "security")
        assert os.path.isdir(security) and not os.listdir(security)
        (notebook,) = [
            p for p in kubectl.items("pods", ns) if p["metadata"]["name"].startswith("jupyter-")
        ]
        (init,) = notebook["status"]["initContainerStatuses"]
        assert init["name"] == "ipython-dirs"
        assert init["state"]["terminated"]["exitCode"] == 0
        wait_for(entry_with(user, "ipyparallel", state="running", workers=1), 60, "1 engine")
        first = last_json(kernel.execute(IPP_MAP.format(n=1), timeout=120))
        assert first["engines"] == 1

        refusals_change_nothing(user, kubectl, "ipyparallel", "ipengine")
        response = user.server_api("PUT", f"{API}/ipyparallel/default", json={"workers": 2})
        assert response.status_code == 200, response.text
        assert worker_replicas(kubectl, ns, "ipengine") == 2
        wait_for(entry_with(user, "ipyparallel", state="running", workers=2), 60, "2 engines")

        second = last_json(kernel.execute(IPP_MAP.format(n=2), timeout=120))
        assert second["engines"] == 2

        # The hub goes and comes back (as when its pod is deleted): the notebook and the
        # engine pods run on untouched, and the same kernel maps over the same engines.
        pods = [p["metadata"]["name"] for p in kubectl.items("pods", ns)]
        pids = {pod: cluster.kubelet.pod_pids(ns, pod) for pod in pods}
        hub.stop()
        hub.start()
        assert user.server_model()["servers"][""]["ready"]
        kernel.reconnect()
        again = last_json(kernel.execute(IPP_MAP.format(n=2), timeout=120))
        assert again["engines"] == 2 and again["hosts"] == second["hosts"]
        assert {pod: cluster.kubelet.pod_pids(ns, pod) for pod in pods} == pids

        # With the notebook's own token the kernel may scale its engines (the control), but
        # not rewrite them: no other image, user, mount or node for the engine pods.
        image = worker_image(kubectl, ns, "ipengine")
        tried = last_json(kernel.execute(REWRITE_ENGINE, timeout=60))
        assert tried == {"image": 403, "labels": 403, "scale": 200}, tried
        assert worker_image(kubectl, ns, "ipengine") == image
        assert worker_replicas(kubectl, ns, "ipengine") == 2
        pods = kubectl.items("pods", ns)
        engines = sorted(
            p["metadata"]["name"]
            for p in pods
            if p["metadata"]["labels"].get(ko.ROLE_LABEL) == "engine"
        )
        assert len(engines) == 2
        if cluster.kubelet is not None and cluster.kubelet.uts:
            # Each engine pod has its own hostname: the map ran on both pods.
            assert second["hosts"] == engines

        def named_records() -> dict[str, Any] | None:
            response = user.server_api("GET", f"{API}/ipyparallel/default/tasks")
            assert response.status_code == 200, response.text
            records = response.json()
            return records if sum(records["counts"].values()) >= 60 else None

        # The controller's task records plus each engine's hostname: what the sidebar shows.
        records = wait_for(named_records, 30, "60 task records with hostnames")
        assert set(records["counts"]) == set(second["hosts"]) | set(first["hosts"])

        response = user.server_api("DELETE", f"{API}/ipyparallel/default")
        assert response.status_code == 204, response.text
        assert worker_replicas(kubectl, ns, "ipengine") == 0
        assert worker_replicas(kubectl, ns, "ipcontroller") == 0
        assert engine_entry(user, "ipyparallel")["state"] == "stopped"
    finally:
        kernel.close()
        user.stop_server(timeout=120)
    assert kubectl.get(f"/api/v1/namespaces/{ns}").status_code == 404
