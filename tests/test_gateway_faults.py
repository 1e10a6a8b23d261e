"""Faults of Dask Gateway clusters on Kubernetes: each ends in a clear state, nothing leaks.

Real processes misbehave (``tests/faulty_entrypoint.py`` run by the process-kubelet as the
cluster image ``faulty:test``): a scheduler that never connects, one that starts too late,
workers that die before they connect, and a gateway killed while its user's server stops.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest
from gatewaykube import (
    GatewayProcess,
    cluster_pods,
    hub_fixture,  # noqa: F401  (the module's hub)
    kubectl_fixture,  # noqa: F401  (and kubectl)
    running_gateway_hub,
    running_kube_cluster,
)
from test_kube_spawner import spawn

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))
FAULTY_IMAGE = "faulty:test"


def fault_config(fault: str, **settings) -> str:
    lines = [
        f"c.KubeSpaceClusterConfig.image = {FAULTY_IMAGE!r}",
        f"c.ClusterConfig.environment = {{'CLUSTERHUB_FAULT': {fault!r}, "
        "'CLUSTERHUB_FAULT_DELAY': '30'}",
    ]
    lines += [f"c.KubeSpaceBackend.{key} = {value!r}" for key, value in settings.items()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def cluster():
    with running_kube_cluster(
        "kube-gateway-faults-",
        image_entrypoints={
            "cluster:test": [sys.executable, "-m", "clusterhub.engines.entrypoint"],
            FAULTY_IMAGE: [sys.executable, os.path.join(HERE, "faulty_entrypoint.py")],
        },
    ) as kube:
        yield kube


@pytest.fixture(scope="module")
def alice(hub):
    return spawn(hub, "alice", profile="dask")


@pytest.fixture
def start_gateway(hub):
    started = []

    def start(extra_config: str) -> GatewayProcess:
        process = GatewayProcess(hub, extra_config)
        started.append(process)  # stopped below even if its start fails half-way
        return process.start()

    yield start
    for process in started:
        process.stop()


def kubelet_pids(hub) -> set[int]:
    return set(hub.cluster.kubelet.all_pids())


def assert_nothing_left(hub, kubectl, namespace: str, pids_before: set[int], gateway) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leaked = [p for p in kubelet_pids(hub) - pids_before if psutil.pid_exists(p)]
        if not cluster_pods(kubectl, namespace) and not leaked:
            break
        time.sleep(0.3)
    assert cluster_pods(kubectl, namespace) == {}, gateway.log_tail()
    assert not [p for p in kubelet_pids(hub) - pids_before if psutil.pid_exists(p)]
    for kind in ("services", "secrets"):
        assert not {n for n in kubectl.names(kind, namespace) if n.startswith("dask-")}, kind


def new_cluster(gateway, token: str, **options) -> str:
    response = gateway.api("POST", "clusters/", token, json={"cluster_options": options})
    assert response.status_code == 201, response.text
    return response.json()["name"]


def test_a_scheduler_that_never_connects_fails_at_the_start_timeout(
    hub, kubectl, alice, start_gateway
):
    gateway = start_gateway(fault_config("scheduler-hangs", cluster_start_timeout=6.0))
    namespace = kubectl.space_of("alice")
    before = kubelet_pids(hub)
    token = hub.user_token("alice")
    name = new_cluster(gateway, token)
    deadline = time.monotonic() + 20
    while f"dask-scheduler-{name}" not in cluster_pods(kubectl, namespace):
        assert time.monotonic() < deadline, gateway.log_tail()
        time.sleep(0.2)
    assert gateway.wait_status(name, token, {"FAILED"}, timeout=40)["status"] == "FAILED"
    assert "startup timed out" in gateway.log_tail(200)
    assert_nothing_left(hub, kubectl, namespace, before, gateway)


def test_a_scheduler_slower_than_the_timeout_fails_before_it_starts(
    hub, kubectl, alice, start_gateway
):
    gateway = start_gateway(fault_config("scheduler-slow", cluster_start_timeout=5.0))
    namespace = kubectl.space_of("alice")
    before = kubelet_pids(hub)
    token = hub.user_token("alice")
    name = new_cluster(gateway, token)
    assert gateway.wait_status(name, token, {"FAILED"}, timeout=40)["status"] == "FAILED"
    assert_nothing_left(hub, kubectl, namespace, before, gateway)


def test_workers_that_die_before_connecting_fail_the_cluster(hub, kubectl, alice, start_gateway):
    gateway = start_gateway(fault_config("worker-exits"))
    namespace = kubectl.space_of("alice")
    before = kubelet_pids(hub)
    token = hub.user_token("alice")
    name = new_cluster(gateway, token)
    gateway.wait_status(name, token, {"RUNNING"}, timeout=60)
    scaled = gateway.api("POST", f"clusters/{name}/scale", token, json={"count": 2})
    assert scaled.status_code == 200, scaled.text
    # Each dead worker pod is seen (restartPolicy Never) and counted; at the limit (3) the
    # cluster fails instead of replacing workers forever.
    assert gateway.wait_status(name, token, {"FAILED"}, timeout=60)["status"] == "FAILED"
    assert "consecutive workers fail to start" in gateway.log_tail(400)
    assert_nothing_left(hub, kubectl, namespace, before, gateway)


def test_a_cluster_whose_space_went_while_the_gateway_was_down_is_recorded_stopped(
    hub, kubectl, alice, start_gateway
):
    gateway = start_gateway("")  # the real image: a healthy cluster
    namespace = kubectl.space_of("alice")
    token = hub.user_token("alice")
    name = new_cluster(gateway, token)
    gateway.wait_status(name, token, {"RUNNING"}, timeout=60)
    assert gateway.api("POST", f"clusters/{name}/scale", token, json={"count": 1}).ok
    deadline = time.monotonic() + 60
    while len(cluster_pods(kubectl, namespace)) < 2:
        assert time.monotonic() < deadline, gateway.log_tail()
        time.sleep(0.3)
    pids = [
        p
        for pod in cluster_pods(kubectl, namespace)
        for p in hub.cluster.kubelet.pod_pids(namespace, pod)
    ]
    # The gateway crashes; meanwhile the owner's server stops (namespace deleted).
    os.killpg(gateway.proc.pid, signal.SIGKILL)
    gateway.proc.wait()
    gateway.proc = None
    gateway.log.close()
    alice.stop_server(timeout=120)
    assert kubectl.get(f"/api/v1/namespaces/{namespace}").status_code == 404
    assert not [p for p in pids if psutil.pid_exists(p)]
    restarted = start_gateway("")
    admin = hub.user_token("admin")
    assert restarted.wait_status(name, admin, {"STOPPED"}, timeout=30)["status"] == "STOPPED"
    assert "is gone (server stopped)" in restarted.log_tail(200)


def test_clusters_stop_with_the_server_where_spaces_are_kept(cluster, kubectl, tmp_path):
    """deleteNamespaceOnStop: false keeps the namespace (and so the pods) after a stop: the
    gateway learns from the hub that the owner's server is gone and stops the cluster."""
    with running_gateway_hub(cluster, str(tmp_path / "hub"), delete_namespace_on_stop=False) as hub:
        gateway = GatewayProcess(hub, "c.KubeSpaceBackend.server_check_period = 1").start()
        try:
            carol = spawn(hub, "carol", profile="dask")
            namespace = kubectl.space_of("carol")
            token = hub.user_token("carol")
            name = new_cluster(gateway, token)
            gateway.wait_status(name, token, {"RUNNING"}, timeout=60)
            assert f"dask-scheduler-{name}" in cluster_pods(kubectl, namespace)
            carol.stop_server(timeout=120)
            assert kubectl.get(f"/api/v1/namespaces/{namespace}").status_code == 200, "kept"
            admin = hub.user_token("admin")
            assert gateway.wait_status(name, admin, {"STOPPED"}, timeout=30)["status"] == "STOPPED"
            assert "has no running server" in gateway.log_tail(200)
            deadline = time.monotonic() + 30
            while cluster_pods(kubectl, namespace) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert cluster_pods(kubectl, namespace) == {}, gateway.log_tail()
        finally:
            gateway.stop()
