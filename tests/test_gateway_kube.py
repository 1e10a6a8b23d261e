"""Dask Gateway on Kubernetes: clusters in their owner's namespace, dying with it.

A real hub (KubeSpaceSpawner), a real dask-gateway-server (KubeSpaceBackend), and the
process-kubelet with a UTS namespace per pod, so that a process's hostname is its pod's
name: a task that reports ``dask-worker-<name>`` ran in that pod.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psutil
import pytest
import requests
from gatewaykube import (
    IMAGE_ENTRYPOINTS,
    GatewayProcess,
    cluster_pods,
    hub_fixture,  # noqa: F401  (the module's hub)
    kubectl_fixture,  # noqa: F401  (and kubectl)
    running_kube_cluster,
)
from test_kube_spawner import spawn

from tests.kube import POD_API_CLIENT
from tests.kube.fixtures import uts_available

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = os.path.dirname(sys.executable)

NEW_CLUSTER = """
import json, socket
from dask_gateway import Gateway
gateway = Gateway()
cluster = gateway.new_cluster()
cluster.scale(3)
client = cluster.get_client()
client.wait_for_workers(3, timeout=120)
futures = client.map(lambda i: socket.gethostname(), range(30), pure=False)
print(json.dumps({
    "name": cluster.name,
    "workers": sorted(set(client.run(socket.gethostname).values())),
    "tasks": sorted(set(client.gather(futures))),
    "scheduler": client.run_on_scheduler(socket.gethostname),
}))
"""


@pytest.fixture(scope="module")
def cluster():
    if not uts_available():
        pytest.skip("unshare --uts needs root and util-linux")
    with running_kube_cluster(
        "kube-gateway-", uts=True, image_entrypoints=IMAGE_ENTRYPOINTS
    ) as kube:
        yield kube


@pytest.fixture(scope="module")
def gateway(hub):
    process = GatewayProcess(hub).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def alice(hub, gateway):
    user = spawn(hub, "alice", profile="dask")
    kernel = user.kernel()
    try:
        yield user, kernel
    finally:
        kernel.close()


@pytest.fixture(scope="module")
def alices_cluster(alice, gateway):
    _, kernel = alice
    return json.loads(kernel.execute(NEW_CLUSTER, timeout=240).strip().splitlines()[-1])


def test_a_kernel_cluster_runs_its_pods_in_the_owners_namespace(hub, kubectl, alices_cluster):
    namespace = kubectl.space_of("alice")
    pods = cluster_pods(kubectl, namespace)
    name = alices_cluster["name"]
    scheduler = f"dask-scheduler-{name}"
    workers = {
        p for p, pod in pods.items() if pod["metadata"]["labels"]["clusterhub.io/role"] == "worker"
    }
    assert scheduler in pods and len(workers) == 3
    assert all(
        p["metadata"]["labels"]["gateway.clusterhub.io/cluster"] == name for p in pods.values()
    )
    # Hostnames are pod names: the tasks really ran in these worker pods.
    assert alices_cluster["workers"] == sorted(workers)
    assert set(alices_cluster["tasks"]) <= workers and len(alices_cluster["tasks"]) >= 2
    assert alices_cluster["scheduler"] == scheduler
    # The Service and the credentials live beside the pods; nothing of the cluster elsewhere.
    assert f"dask-{name}" in kubectl.names("services", namespace)
    assert f"dask-credentials-{name}" in kubectl.names("secrets", namespace)
    everywhere = kubectl.get("/api/v1/pods?labelSelector=gateway.clusterhub.io/cluster").json()
    assert {p["metadata"]["namespace"] for p in everywhere["items"]} == {namespace}


def test_another_user_can_neither_see_nor_touch_it_but_an_admin_sees_all(
    hub, gateway, alices_cluster
):
    name = alices_cluster["name"]
    bob = hub.user_token("bob")
    assert gateway.api("GET", f"clusters/{name}", bob).status_code == 403
    assert gateway.api("POST", f"clusters/{name}/scale", bob, json={"count": 0}).status_code == 403
    assert gateway.api("DELETE", f"clusters/{name}", bob).status_code == 403
    assert name not in gateway.api("GET", "clusters/", bob).json()
    assert gateway.api("GET", "admin/clusters/", bob).status_code == 403
    assert gateway.wait_status(name, hub.user_token("alice"), {"RUNNING"})
    admin = hub.user_token("admin")
    listed = gateway.api("GET", "admin/clusters/", admin).json()
    assert listed[name]["username"] == "alice" and listed[name]["status"] == "RUNNING"
    assert "tls_key" not in listed[name]
    assert gateway.api("GET", f"clusters/{name}", admin).json()["status"] == "RUNNING"


def test_no_server_or_options_beyond_the_profile_create_nothing(hub, gateway, kubectl):
    before = kubectl.get("/api/v1/pods?labelSelector=gateway.clusterhub.io/cluster").json()
    bob = hub.user_token("bob")  # bob has no server, hence no namespace
    refused = gateway.api("POST", "clusters/", bob, json={"cluster_options": {}})
    assert refused.status_code == 422
    assert "user 'bob' has no running server" in refused.json()["error"]
    alice = hub.user_token("alice")
    refused = gateway.api("POST", "clusters/", alice, json={"cluster_options": {"worker_cores": 3}})
    assert refused.status_code == 422
    assert "worker_cores: must be a number from 1 to 2, not 3" in refused.json()["error"]
    after = kubectl.get("/api/v1/pods?labelSelector=gateway.clusterhub.io/cluster").json()
    assert len(after["items"]) == len(before["items"])


# From a kernel, with the notebook pod's ServiceAccount token (what any attendee's code can
# read): read and rewrite the space's record of its profile.
REWRITE_SPACE_RECORD = (
    POD_API_CLIENT
    + """
record = f"/api/v1/namespaces/{ns}/configmaps/clusterhub-space"
bigger = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "clusterhub-space", "namespace": ns},
          "data": {"limits": json.dumps({"workers": 64, "worker_cores": 64,
                                         "worker_memory_gib": 256})}}
print(json.dumps({
    "read": call("GET", record),
    "replace": call("PUT", record, bigger),
    "delete": call("DELETE", record),
    "create": call("POST", f"/api/v1/namespaces/{ns}/configmaps",
                   dict(bigger, metadata={"name": "clusterhub-space-2", "namespace": ns})),
}))
"""
)


def option_spec(gateway, token: str) -> dict:
    answer = gateway.api("GET", "options", token)
    assert answer.status_code == 200, answer.text
    return {field["field"]: field for field in answer.json()["cluster_options"]}


def test_a_profile_only_the_hubs_config_has_bounds_and_sizes_the_users_clusters(
    hub, gateway, kubectl
):
    """The hub resolves the profile and records it in the space; the gateway, which has no
    copy of the profiles, bounds and sizes clusters by that record. The attendee's own code
    can neither read nor rewrite it."""
    erin = spawn(hub, "erin", profile="wide", worker_cores="3", worker_memory_gib="5")
    token = hub.user_token("erin")
    kernel = erin.kernel()
    try:
        spec = option_spec(gateway, token)
        assert (spec["worker_cores"]["default"], spec["worker_cores"]["spec"]["max"]) == (3, 3)
        assert spec["worker_memory"]["default"] == 5.0
        assert spec["worker_memory"]["spec"]["max"] == 6.0
        refused = gateway.api(
            "POST", "clusters/", token, json={"cluster_options": {"worker_cores": 4}}
        )
        assert refused.status_code == 422
        assert "worker_cores: must be a number from 1 to 3, not 4" in refused.json()["error"]

        namespace = kubectl.space_of("erin")
        path = f"/api/v1/namespaces/{namespace}/configmaps/clusterhub-space"
        before = kubectl.get(path).json()
        attempts = json.loads(kernel.execute(REWRITE_SPACE_RECORD).strip().splitlines()[-1])
        assert attempts == {"read": 403, "replace": 403, "delete": 403, "create": 403}
        after = kubectl.get(path).json()
        assert after["data"] == before["data"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert option_spec(gateway, token)["worker_cores"]["spec"]["max"] == 3

        # Without its record (a space made before records existed) the gateway refuses and
        # says what to do; it never falls back to other bounds.
        gone = requests.delete(kubectl.base + path, headers=kubectl.headers, timeout=10)
        assert gone.status_code == 200, gone.text
        refused = gateway.api("POST", "clusters/", token, json={"cluster_options": {}})
        assert refused.status_code == 422
        assert "has no record of its profile" in refused.json()["error"]
        assert "restart your server" in refused.json()["error"]
    finally:
        kernel.close()
        erin.stop_server()


def test_a_gateway_restart_resumes_a_running_cluster(hub, gateway, kubectl, alice, alices_cluster):
    _, kernel = alice
    namespace = kubectl.space_of("alice")
    name = alices_cluster["name"]
    scheduler = f"dask-scheduler-{name}"
    pids = hub.cluster.kubelet.pod_pids(namespace, scheduler)
    assert pids
    gateway.stop()
    assert hub.cluster.kubelet.pod_pids(namespace, scheduler) == pids, "pods outlive the gateway"
    gateway.start()
    token = hub.user_token("alice")
    assert gateway.wait_status(name, token, {"RUNNING"})["status"] == "RUNNING"
    # The same scheduler, reached again through the new gateway's proxy, still scales.
    out = kernel.execute(
        f"""
import json, socket, time
cluster = gateway.connect({name!r})
client = cluster.get_client()
cluster.scale(2)
deadline = time.time() + 90
while len(client.scheduler_info()["workers"]) != 2 and time.time() < deadline:
    time.sleep(0.2)
print(json.dumps({{"workers": len(client.scheduler_info()["workers"]),
    "scheduler": client.run_on_scheduler(socket.gethostname)}}))
""",
        timeout=180,
    )
    state = json.loads(out.strip().splitlines()[-1])
    assert state == {"workers": 2, "scheduler": scheduler}
    assert hub.cluster.kubelet.pod_pids(namespace, scheduler) == pids
    deadline = time.monotonic() + 60
    while len(cluster_pods(kubectl, namespace)) != 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(cluster_pods(kubectl, namespace)) == 3, "the retired worker's pod is deleted"


def test_a_hub_restart_leaves_the_notebook_and_its_cluster_running(
    hub, gateway, kubectl, alice, alices_cluster
):
    """As when the hub's pod is deleted and its Deployment makes a new one: the hub goes
    (SIGTERM, as the kubelet stops a container) and comes back; the user's pods never notice."""
    user, kernel = alice
    namespace = kubectl.space_of("alice")
    name = alices_cluster["name"]
    pods = [p["metadata"]["name"] for p in kubectl.items("pods", namespace)]
    notebook = [p for p in pods if p.startswith("jupyter-")]
    assert notebook and f"dask-scheduler-{name}" in pods
    pids = {pod: hub.cluster.kubelet.pod_pids(namespace, pod) for pod in pods}
    assert all(pids.values())
    kernel.execute("before_the_restart = 42")

    hub.stop()
    assert {pod: hub.cluster.kubelet.pod_pids(namespace, pod) for pod in pods} == pids
    hub.start()

    assert user.server_model()["servers"][""]["ready"]
    kernel.reconnect()  # through the proxy the new hub started
    out = kernel.execute(
        f"""
import json
cluster = gateway.connect({name!r})
client = cluster.get_client()
print(json.dumps({{"kept": before_the_restart,
    "total": sum(client.gather(client.map(lambda i: i * 2, range(20))))}}))
""",
        timeout=180,
    )
    assert json.loads(out.strip().splitlines()[-1]) == {"kept": 42, "total": 380}
    assert {pod: hub.cluster.kubelet.pod_pids(namespace, pod) for pod in pods} == pids


def test_stopping_the_server_stops_its_clusters(hub, gateway, kubectl, alice, alices_cluster):
    user, kernel = alice
    namespace = kubectl.space_of("alice")
    name = alices_cluster["name"]
    pids = [
        pid
        for pod in cluster_pods(kubectl, namespace)
        for pid in hub.cluster.kubelet.pod_pids(namespace, pod)
    ]
    assert pids
    kernel.close = lambda: None  # the server and its kernels go away with the space
    user.stop_server(timeout=120)
    assert kubectl.get(f"/api/v1/namespaces/{namespace}").status_code == 404
    assert cluster_pods(kubectl, namespace) == {}
    everywhere = kubectl.get("/api/v1/pods?labelSelector=gateway.clusterhub.io/cluster").json()
    assert everywhere["items"] == []
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    admin = hub.user_token("admin")
    assert gateway.wait_status(name, admin, {"STOPPED"}, timeout=30)["status"] == "STOPPED"
    # ... and with no server there is no new cluster either.
    refused = gateway.api("POST", "clusters/", hub.user_token("alice"), json={})
    assert refused.status_code == 422 and "no running server" in refused.json()["error"]
