"""Tests of the Kubernetes test harness (tests/kube): the emulator against the real
kubernetes_asyncio client, the process-kubelet against real processes, and plain KubeSpawner 7.1
with user namespaces against both."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.watch import Watch

# Not from tests.kube.fixtures: pytest imports that plugin itself (assertion rewriting).
from tests.kube import StandInUser, kube_options
from tests.kube import wait_for_async as wait_for

if TYPE_CHECKING:
    from tests.kube.fixtures import KubeCluster

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


async def wait_gone(pids: list[int], timeout: float = 10) -> None:
    async def gone() -> bool:
        return not any(psutil.pid_exists(p) and _alive(p) for p in pids)

    await wait_for(gone, timeout)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    from clusterhub.ports import free_port as chosen_port  # outside the ephemeral range

    return chosen_port()


async def http_status(url: str) -> int:
    """The HTTP status of a GET, or 0 while nothing listens."""

    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status)
        except OSError:
            return 0

    return await asyncio.to_thread(get)


def make_pod(name: str, command: list[str] | None, **spec: Any) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="python:3.11", command=command)],
            **spec,
        ),
    )


def status_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


async def running_pods(v1: client.CoreV1Api, ns: str, selector: str = "") -> list[client.V1Pod]:
    pods = (await v1.list_namespaced_pod(ns, label_selector=selector)).items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


# ------------------------------------------------------------------------------- API basics


@pytest.mark.asyncio
@kube_options(kubelet=False)
async def test_namespace_create_get_errors(kube_api: KubeCluster, kube_client: Any) -> None:
    v1 = client.CoreV1Api(kube_client)
    ns = await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="alpha")))
    assert ns.metadata.uid and ns.metadata.creation_timestamp
    assert int(ns.metadata.resource_version) > 0
    assert ns.status.phase == "Active"
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "alpha"}

    got = await v1.read_namespace("alpha")
    assert got.metadata.uid == ns.metadata.uid

    with pytest.raises(ApiException) as err:
        await v1.read_namespace("nope")
    assert err.value.status == 404
    assert status_body(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'namespaces "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "namespaces"},
        "code": 404,
    }

    with pytest.raises(ApiException) as err:
        await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="alpha")))
    assert err.value.status == 409
    assert status_body(err.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as err:
        await v1.create_namespaced_config_map("missing", client.V1ConfigMap(metadata={"name": "x"}))
    assert err.value.status == 404
    assert status_body(err.value)["message"] == 'namespaces "missing" not found'

    with pytest.raises(ApiException) as err:
        await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="Bad_Name")))
    assert err.value.status == 422
    assert status_body(err.value)["reason"] == "Invalid"

    # generateName, server-filled namespace, and the namespace's default ServiceAccount.
    cm = await v1.create_namespaced_config_map(
        "alpha", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-"))
    )
    assert cm.metadata.name.startswith("cfg-") and len(cm.metadata.name) == 9
    assert cm.metadata.namespace == "alpha"

    async def default_sa() -> bool:
        sas = await v1.list_namespaced_service_account("alpha")
        return [s.metadata.name for s in sas.items] == ["default"]

    await wait_for(default_sa)

    # The discovery documents clients use.
    version = await client.VersionApi(kube_client).get_code()
    assert version.major == "1"
    groups = await client.ApisApi(kube_client).get_api_versions()
    assert {g.name for g in groups.groups} >= {"apps", "networking.k8s.io", _RBAC}
    resources = await client.AppsV1Api(kube_client).get_api_resources()
    assert "deployments/scale" in {r.name for r in resources.resources}


_RBAC = "rbac.authorization.k8s.io"


@pytest.mark.asyncio
@kube_options(kubelet=False)
async def test_selectors_conflicts_and_patches(kube_api: KubeCluster, kube_client: Any) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="sel")))
    for name, labels in {
        "a": {"app": "dask", "tier": "worker"},
        "b": {"app": "dask", "tier": "scheduler"},
        "c": {"app": "spark"},
        "d": {},
    }.items():
        await v1.create_namespaced_config_map(
            "sel", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )

    async def names(**kwargs: Any) -> list[str]:
        items = (await v1.list_namespaced_config_map("sel", **kwargs)).items
        return sorted(i.metadata.name for i in items)

    assert await names(label_selector="app=dask") == ["a", "b"]
    assert await names(label_selector="app==dask,tier!=worker") == ["b"]
    assert await names(label_selector="app!=dask") == ["c", "d"]
    assert await names(label_selector="tier in (worker, scheduler)") == ["a", "b"]
    assert await names(label_selector="app notin (dask)") == ["c", "d"]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!app") == ["d"]
    assert await names(field_selector="metadata.name=c") == ["c"]
    assert await names(field_selector="metadata.name!=c,metadata.namespace=sel") == ["a", "b", "d"]
    with pytest.raises(ApiException) as err:
        await names(field_selector="data.x=1")
    assert err.value.status == 400
    assert status_body(err.value)["message"] == "field label not supported: data.x"
    with pytest.raises(ApiException) as err:
        await names(label_selector="app in dask")
    assert err.value.status == 400

    # Paging through a list.
    page = await v1.list_namespaced_config_map("sel", limit=2)
    assert [i.metadata.name for i in page.items] == ["a", "b"]
    rest = await v1.list_namespaced_config_map("sel", limit=10, _continue=page.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c", "d"]

    # PUT with a stale resourceVersion conflicts; with the current one it succeeds.
    cm = await v1.read_namespaced_config_map("a", "sel")
    cm.data = {"k": "1"}
    updated = await v1.replace_namespaced_config_map("a", "sel", cm)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"k": "2"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        await v1.replace_namespaced_config_map("a", "sel", cm)
    assert err.value.status == 409
    body = status_body(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"].startswith('Operation cannot be fulfilled on configmaps "a"')

    # Strategic merge (the client's default for dicts), JSON patch, merge patch.
    patched = await v1.patch_namespaced_config_map("a", "sel", {"data": {"j": "x"}})
    assert patched.data == {"k": "1", "j": "x"}
    patched = await v1.patch_namespaced_config_map(
        "a",
        "sel",
        [{"op": "remove", "path": "/data/k"}, {"op": "add", "path": "/data/z", "value": "9"}],
    )
    assert patched.data == {"j": "x", "z": "9"}
    patched = await v1.patch_namespaced_config_map(
        "a", "sel", {"data": {"j": None}}, _content_type="application/merge-patch+json"
    )
    assert patched.data == {"z": "9"}

    # A secret's stringData is stored as base64 data.
    secret = await v1.create_namespaced_secret(
        "sel", client.V1Secret(metadata={"name": "s"}, string_data={"token": "abc"})
    )
    assert secret.data == {"token": "YWJj"} and secret.type == "Opaque"

    # DELETE of a configmap answers with a Status, of a pod with the object.
    status = await v1.delete_namespaced_config_map("d", "sel")
    assert status.status == "Success"
    assert "list configmaps" in kube_api.request_counts()
    kube_api.reset_request_counts()
    assert kube_api.request_counts() == {}


@pytest.mark.asyncio
@kube_options(kubelet=False)
async def test_watch_events_timeout_and_expiry(kube_api: KubeCluster, kube_client: Any) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="w")))
    start_rv = (await v1.list_namespaced_config_map("w")).metadata.resource_version
    seen: list[tuple[str, str]] = []

    async def watch() -> float:
        t0 = time.monotonic()
        async with Watch().stream(
            v1.list_namespaced_config_map,
            "w",
            label_selector="app=x",
            resource_version=start_rv,
            timeout_seconds=2,
        ) as stream:
            async for ev in stream:
                seen.append((ev["type"], ev["object"].metadata.name))
        return time.monotonic() - t0

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    meta = client.V1ObjectMeta(name="one", labels={"app": "x"})
    await v1.create_namespaced_config_map("w", client.V1ConfigMap(metadata=meta))
    await v1.create_namespaced_config_map(
        "w", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="other"))
    )
    await v1.patch_namespaced_config_map("one", "w", {"data": {"a": "b"}})
    # Leaving the selection is a DELETED event for this watch.
    await v1.patch_namespaced_config_map("one", "w", {"metadata": {"labels": {"app": "y"}}})
    await v1.patch_namespaced_config_map("one", "w", {"metadata": {"labels": {"app": "x"}}})
    await v1.delete_namespaced_config_map("one", "w")
    elapsed = await asyncio.wait_for(task, 10)
    assert seen == [
        ("ADDED", "one"),
        ("MODIFIED", "one"),
        ("DELETED", "one"),
        ("ADDED", "one"),
        ("DELETED", "one"),
    ]
    assert 1.8 < elapsed < 4, elapsed

    # Replaying from an old resourceVersion gives the same history.
    replay = []
    async with Watch().stream(
        v1.list_namespaced_config_map, "w", resource_version=start_rv, timeout_seconds=1
    ) as stream:
        async for ev in stream:
            replay.append((ev["type"], ev["object"].metadata.name))
    assert replay[0] == ("ADDED", "one") and ("ADDED", "other") in replay

    # After compaction the old resourceVersion is gone: 410 via an ERROR event.
    kube_api.emulator.compact()
    with pytest.raises(ApiException) as err:
        async with Watch().stream(
            v1.list_namespaced_config_map, "w", resource_version=start_rv, timeout_seconds=1
        ) as stream:
            async for _ in stream:
                pass
    assert err.value.status == 410

    # A cluster-wide watch from "now" sees only new events.
    rv = (await v1.list_config_map_for_all_namespaces()).metadata.resource_version
    events = []

    async def watch_all() -> None:
        async with Watch().stream(
            v1.list_config_map_for_all_namespaces, resource_version=rv, timeout_seconds=1
        ) as stream:
            async for ev in stream:
                events.append((ev["type"], ev["object"].metadata.namespace))

    task = asyncio.create_task(watch_all())
    await asyncio.sleep(0.2)
    await v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata={"name": "z"}))
    await task
    assert events == [("ADDED", "default")]


# ------------------------------------------------------------------------------- the kubelet


@pytest.mark.asyncio
@kube_options(image_entrypoints={"python:3.11": [sys.executable]})
async def test_pod_lifecycle_probe_restart_and_log(
    kube_api: KubeCluster, kube_client: Any, tmp_path: Path
) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="life")))
    await v1.create_namespaced_secret(
        "life", client.V1Secret(metadata={"name": "creds"}, string_data={"pw": "hunter2"})
    )
    port = free_port()
    # A readiness probe holds `ready` back until the server listens (after 1 s).
    server = make_pod(
        "server",
        ["sh", "-c", f"sleep 1; exec {sys.executable} -m http.server {port} --bind 127.0.0.1"],
    )
    server.spec.containers[0].readiness_probe = client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/", port=port), period_seconds=1
    )
    await v1.create_namespaced_pod("life", server)

    # Env from values, fieldRefs and a secret; exit code 3 with restartPolicy Never.
    env_out = tmp_path / "env.txt"
    script = (
        f"import os; e = os.environ; open({str(env_out)!r}, 'w')"
        ".write(e['POD'] + ' ' + e['PW'] + ' ' + e['GREETING']); print('bye'); raise SystemExit(3)"
    )
    # No command: the mapped image entrypoint (this interpreter) runs the args.
    once = make_pod("once", None, restart_policy="Never")
    once.spec.containers[0].args = ["-c", script]
    once.spec.containers[0].env = [
        client.V1EnvVar(name="POD", value_from={"fieldRef": {"fieldPath": "metadata.name"}}),
        client.V1EnvVar(name="PW", value_from={"secretKeyRef": {"name": "creds", "key": "pw"}}),
        client.V1EnvVar(name="GREETING", value="hi $(POD)"),
    ]
    await v1.create_namespaced_pod("life", once)
    # restartPolicy Always: a crashing container is restarted.
    await v1.create_namespaced_pod("life", make_pod("crash", ["sh", "-c", "exit 1"]))

    async def server_running_not_ready() -> bool:
        p = await v1.read_namespaced_pod("server", "life")
        return p.status.phase == "Running" and not p.status.container_statuses[0].ready

    await wait_for(server_running_not_ready, 5)

    async def server_ready() -> bool:
        p = await v1.read_namespaced_pod("server", "life")
        conds = {c.type: c.status for c in p.status.conditions or []}
        return p.status.container_statuses[0].ready and conds.get("Ready") == "True"

    await wait_for(server_ready, 10)
    assert await http_status(f"http://127.0.0.1:{port}/") == 200

    async def once_failed() -> client.V1Pod | None:
        p = await v1.read_namespaced_pod("once", "life")
        return p if p.status.phase == "Failed" else None

    pod = await wait_for(once_failed, 10)
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert env_out.read_text() == "once hunter2 hi once"
    assert await v1.read_namespaced_pod_log("once", "life") == "bye\n"

    async def crash_restarted() -> bool:
        p = await v1.read_namespaced_pod("crash", "life")
        return p.status.container_statuses[0].restart_count >= 1

    await wait_for(crash_restarted, 10)

    reasons = {e.reason for e in (await v1.list_namespaced_event("life")).items}
    assert {"Scheduled", "Started"} <= reasons

    # Graceful delete: deletionTimestamp first, the kubelet kills and then removes the pod.
    pids = kube_api.kubelet.pod_pids("life", "server")
    assert pids and all(_alive(p) for p in pids)
    deleted = await v1.delete_namespaced_pod("server", "life")
    assert deleted.metadata.deletion_timestamp is not None

    async def server_gone() -> bool:
        try:
            await v1.read_namespaced_pod("server", "life")
        except ApiException as exc:
            return exc.status == 404
        return False

    await wait_for(server_gone, 10)
    await wait_gone(pids)


@pytest.mark.asyncio
async def test_deployment_scale_starts_and_stops_processes(
    kube_api: KubeCluster, kube_client: Any
) -> None:
    v1 = client.CoreV1Api(kube_client)
    apps = client.AppsV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="dep")))
    labels = {"app": "worker"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="worker"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="w", image="python:3.11", command=SLEEPER)]
                ),
            ),
        ),
    )
    await apps.create_namespaced_deployment("dep", deployment)

    async def ready(n: int) -> list[client.V1Pod] | None:
        d = await apps.read_namespaced_deployment("worker", "dep")
        pods = await running_pods(v1, "dep", "app=worker")
        if (d.status.ready_replicas or 0) == n and len(pods) == n:
            return pods
        return None

    pods = await wait_for(lambda: ready(2), 10)
    for p in pods:
        assert p.metadata.name.startswith("worker-")
        assert len(p.metadata.name.split("-")) == 3  # <deployment>-<hash>-<suffix>
        assert p.metadata.owner_references[0].kind == "ReplicaSet"
    rs = (await apps.list_namespaced_replica_set("dep")).items
    assert rs[0].metadata.owner_references[0].name == "worker"

    def pids_of(pods: list[client.V1Pod]) -> list[int]:
        return [pid for p in pods for pid in kube_api.kubelet.pod_pids("dep", p.metadata.name)]

    first = pids_of(pods)
    assert len(first) == 2
    for pid in first:
        assert " ".join(psutil.Process(pid).cmdline()) == " ".join(SLEEPER)

    # Scale up through the scale subresource (patch), down through PUT.
    scale = await apps.patch_namespaced_deployment_scale("worker", "dep", {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    pods = await wait_for(lambda: ready(3), 10)
    assert len(pids_of(pods)) == 3
    scale = await apps.read_namespaced_deployment_scale("worker", "dep")
    assert scale.status.selector == "app=worker"
    scale.spec.replicas = 1
    await apps.replace_namespaced_deployment_scale("worker", "dep", scale)
    pods = await wait_for(lambda: ready(1), 10)
    survivors = pids_of(pods)
    all_pids = set(first) | set(pids_of(pods))

    async def only_survivor_left() -> bool:
        return len(await running_pods(v1, "dep")) == 1 and not any(
            _alive(p) for p in all_pids - set(survivors)
        )

    await wait_for(only_survivor_left, 10)

    # Deleting the deployment garbage-collects its ReplicaSet and pods, and the processes.
    await apps.delete_namespaced_deployment("worker", "dep")
    await wait_gone(survivors)

    async def empty() -> bool:
        return (
            not (await v1.list_namespaced_pod("dep")).items
            and not (await apps.list_namespaced_replica_set("dep")).items
        )

    await wait_for(empty, 10)


@pytest.mark.asyncio
@kube_options(uts=True)
async def test_uts_pod_sees_its_own_hostname(
    kube_api: KubeCluster, kube_client: Any, tmp_path: Path
) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="uts")))
    out = tmp_path / "hostname.txt"
    command = ["sh", "-c", f'hostname > "{out}"; echo "$HOSTNAME"; exec sleep 600']
    await v1.create_namespaced_pod("uts", make_pod("host-probe-7", command))

    async def written() -> str:
        return out.read_text().strip() if out.exists() else ""

    assert await wait_for(written, 10) == "host-probe-7"
    assert socket.gethostname() != "host-probe-7"  # the test's own UTS namespace is untouched
    log = await wait_for(lambda: v1.read_namespaced_pod_log("host-probe-7", "uts"), 5)
    assert log == "host-probe-7\n"


@pytest.mark.asyncio
async def test_namespace_delete_cascades_and_kills(kube_api: KubeCluster, kube_client: Any) -> None:
    v1 = client.CoreV1Api(kube_client)
    await v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
    await v1.create_namespaced_pod("doomed", make_pod("p1", SLEEPER))
    await v1.create_namespaced_pod(
        "doomed", make_pod("p2", SLEEPER, termination_grace_period_seconds=1)
    )
    await v1.create_namespaced_config_map("doomed", client.V1ConfigMap(metadata={"name": "c"}))
    await wait_for(lambda: _count_running(v1, "doomed", 2), 10)
    pids = kube_api.kubelet.pod_pids("doomed", "p1") + kube_api.kubelet.pod_pids("doomed", "p2")
    assert len(pids) == 2

    rv = (await v1.list_namespace()).metadata.resource_version
    ns_events: list[tuple[str, str]] = []

    async def watch_ns() -> None:
        async with Watch().stream(
            v1.list_namespace,
            field_selector="metadata.name=doomed",
            resource_version=rv,
            timeout_seconds=10,
        ) as stream:
            async for ev in stream:
                ns_events.append((ev["type"], ev["object"].status.phase))
                if ev["type"] == "DELETED":
                    return

    watcher = asyncio.create_task(watch_ns())
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    # The server answers with the Namespace; the generated client would parse it as a V1Status.
    resp = await v1.delete_namespace("doomed", _preload_content=False)
    body = json.loads(await resp.read())
    assert (body["kind"], body["status"]["phase"]) == ("Namespace", "Terminating")

    with pytest.raises(ApiException) as err:
        await v1.create_namespaced_config_map("doomed", client.V1ConfigMap(metadata={"name": "n"}))
    assert err.value.status == 403
    assert status_body(err.value)["message"] == (
        'configmaps "n" is forbidden: unable to create new content in namespace doomed because '
        "it is being terminated"
    )

    await asyncio.wait_for(watcher, 15)
    assert ns_events[0] == ("MODIFIED", "Terminating")
    assert ns_events[-1][0] == "DELETED"
    assert time.monotonic() - t0 < 8
    await wait_gone(pids, 5)
    with pytest.raises(ApiException) as err:
        await v1.read_namespace("doomed")
    assert err.value.status == 404


async def _count_running(v1: client.CoreV1Api, ns: str, n: int) -> bool:
    return len(await running_pods(v1, ns)) == n


@pytest.mark.asyncio
async def test_no_process_outlives_its_container_or_the_cluster(tmp_path: Path) -> None:
    # Built by hand, not with the fixture, to check what the fixture relies on: stop().
    from kubernetes_asyncio import config

    from tests.kube.fixtures import KubeCluster

    cluster = KubeCluster(tmp_path / "cluster").start()
    leftover = tmp_path / "leftover.pid"
    try:
        api = await config.new_client_from_config(config_file=cluster.kubeconfig)
        try:
            v1 = client.CoreV1Api(api)
            # A child that escapes into its own session dies with its container's main process.
            await v1.create_namespaced_pod(
                "default",
                make_pod(
                    "escapes",
                    ["sh", "-c", f"setsid sleep 600 & echo $! > {leftover}; exit 0"],
                    restart_policy="Never",
                ),
            )
            # Ignores SIGTERM: killed after its (capped) grace period.
            stubborn = ["sh", "-c", "trap '' TERM; sleep 600 & wait"]
            await v1.create_namespaced_pod(
                "default", make_pod("stubborn", stubborn, termination_grace_period_seconds=1)
            )
            # Left running for stop() to clean up, with an escaped grandchild.
            await v1.create_namespaced_pod(
                "default", make_pod("left", ["sh", "-c", "setsid sleep 600 & exec sleep 600"])
            )

            async def settled() -> bool:
                pods = {p.metadata.name: p for p in (await v1.list_namespaced_pod("default")).items}
                return (
                    pods["escapes"].status.phase == "Succeeded"
                    and pods["stubborn"].status.phase == "Running"
                    and pods["left"].status.phase == "Running"
                )

            await wait_for(settled, 10)
            await wait_gone([int(leftover.read_text())], 5)

            pids = cluster.kubelet.pod_pids("default", "stubborn")
            t0 = time.monotonic()
            await v1.delete_namespaced_pod("stubborn", "default")
            await wait_gone(pids, 5)
            assert 0.9 < time.monotonic() - t0 < 4
        finally:
            await api.close()
        started = cluster.kubelet.all_pids()
        assert started
        tagged = [
            p.pid
            for p in psutil.process_iter()
            if _environ(p).get("PROCESS_KUBELET_TAG", "").startswith(cluster.kubelet.tag_prefix)
        ]
        assert len(tagged) >= 2  # the pod's sleep and its escaped sibling
    finally:
        cluster.stop()
    await wait_gone(started + tagged, 2)


def _environ(p: psutil.Process) -> dict[str, str]:
    try:
        return p.environ()
    except (psutil.Error, OSError):
        return {}


# ------------------------------------------------------------------------------- KubeSpawner


@pytest.mark.asyncio
async def test_kubespawner_user_namespace_start_poll_stop(
    kube_api: KubeCluster, kube_client: Any
) -> None:
    from jupyterhub.objects import Hub
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    port = free_port()
    cfg = Config()
    cfg.KubeSpawner.enable_user_namespaces = True
    cfg.KubeSpawner.user_namespace_template = "clusterhub-{username}"
    cfg.KubeSpawner.image = "python:3.11"
    cfg.KubeSpawner.cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    cfg.KubeSpawner.port = port
    cfg.KubeSpawner.start_timeout = 30
    cfg.KubeSpawner.k8s_api_request_retry_timeout = 10
    spawner = KubeSpawner(
        hub=Hub(),
        user=StandInUser("alice"),
        config=cfg,
        api_token="t0k3n",
        oauth_client_id="unused",
    )
    v1 = client.CoreV1Api(kube_client)
    try:
        assert spawner.namespace == "clusterhub-alice"
        assert isinstance(await spawner.poll(), int)  # nothing running yet

        url = await asyncio.wait_for(spawner.start(), 30)
        assert url == f"http://127.0.0.1:{port}"
        ns = await v1.read_namespace("clusterhub-alice")
        assert ns.status.phase == "Active"
        pod = await v1.read_namespaced_pod(spawner.pod_name, "clusterhub-alice")
        assert pod.status.phase == "Running"
        assert pod.metadata.labels["component"] == "singleuser-server"
        pids = kube_api.kubelet.pod_pids("clusterhub-alice", spawner.pod_name)
        assert len(pids) == 1 and "http.server" in psutil.Process(pids[0]).cmdline()
        # Running is not listening yet: like JupyterHub, wait for the server to answer.
        assert await wait_for(lambda: http_status(url + "/"), 10) == 200

        assert await spawner.poll() is None

        await asyncio.wait_for(spawner.stop(), 30)
        with pytest.raises(ApiException) as err:
            await v1.read_namespaced_pod(spawner.pod_name, "clusterhub-alice")
        assert err.value.status == 404
        await wait_gone(pids, 5)
        assert isinstance(await spawner.poll(), int)

        counts = kube_api.request_counts()
        assert counts["create namespaces"] == 1 and counts["create pods"] == 1
        assert counts["watch pods"] >= 1 and counts["delete pods"] >= 1
    finally:
        await KubeSpawner._stop_all_reflectors()
