"""Real engines in a user's space on the Kubernetes emulator.

KubeSpaceSpawner runs in-process (no hub) against the emulator; the process-kubelet runs the
cluster image ``cluster:test`` as ``python -m clusterhub.engines.entrypoint MODE``, so every
engine pod is a real Spark JVM or IPyParallel process, and engines find their leader through
the kubelet's Service DNS (the hosts file it mounts into each pod). A notebook scales its
workers through the scale subresource, and a one-off "driver" pod - standing in for the
notebook's kernel, with the notebook's environment - runs a job whose answer is read from the
pod log API, as ``kubectl logs`` would.

Everything listens on 127.0.0.1 at the fixed ports of ``clusterhub.spawner.kubeobjects``, so
only one space per test and the ports must be free (another run on this machine collides).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil
import pytest
import pytest_asyncio

from clusterhub.spawner import kubeobjects as ko
from clusterhub.spawner.kubespace import NOTEBOOK_SERVICE_ACCOUNT

# Not from tests.kube.fixtures: pytest imports that plugin itself (assertion rewriting).
from tests.kube import StandInUser, busy_ports, kube_options, pod_shared_dir
from tests.kube import wait_for_async as wait_for
from tests.kube.http import EmulatorHttp

if TYPE_CHECKING:
    from clusterhub.spawner.kube import KubeSpaceSpawner
    from tests.kube.fixtures import KubeCluster

BIN = os.path.dirname(sys.executable)
ENGINE_OPTIONS = kube_options(
    image_entrypoints={"cluster:test": [sys.executable, "-m", "clusterhub.engines.entrypoint"]},
    base_env={
        "PATH": BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        # Everything on loopback: pods share this machine's network.
        "CLUSTERHUB_BIND_HOST": "127.0.0.1",
        # Small JVMs: the defaults (1 GiB daemons, every core and all memory but 1 GiB per
        # worker) would make this machine's size part of the test.
        "SPARK_DAEMON_MEMORY": "256m",
        "SPARK_WORKER_CORES": "1",
        "SPARK_WORKER_MEMORY": "1g",
    },
)
SPARK_PORTS = (ko.SPARK_MASTER_PORT, ko.SPARK_MASTER_UI_PORT, ko.SPARK_WORKER_UI_PORT)
MASTER_JSON = f"http://127.0.0.1:{ko.SPARK_MASTER_UI_PORT}/json/"

# The kernel's side of the job: a bare builder, as a user would write it (MASTER from the
# notebook's environment picks the space's master); executors dial back to 127.0.0.1.
SPARK_DRIVER = """
import json
from pyspark.sql import SparkSession

spark = (
    SparkSession.builder.appName("squares")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.driver.memory", "512m")
    .config("spark.executor.memory", "512m")
    .config("spark.executor.cores", "1")
    .config("spark.cores.max", "2")
    .config("spark.ui.enabled", "false")
    # Start only when both workers' executors are there, so the job runs on both.
    .config("spark.scheduler.minRegisteredResourcesRatio", "1.0")
    .config("spark.scheduler.maxRegisteredResourcesWaitingTime", "60s")
    .getOrCreate()
)
sc = spark.sparkContext
executors = len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1  # minus the driver
total = sc.parallelize(range(1, 1001), 4).map(lambda x: x * x).sum()
print("RESULT " + json.dumps({"master": sc.master, "executors": executors, "sum": total}))
spark.stop()
"""

IPP_DRIVER = """
import json, os
import ipyparallel as ipp

rc = ipp.Client()  # as in a notebook: the file is in IPYTHONDIR's default profile
rc.wait_for_engines(2, timeout=60)
pids = rc[:].apply_sync(os.getpid)
squares = rc.load_balanced_view().map_sync(lambda x: x * x, range(10))
print("RESULT " + json.dumps({"engines": len(rc.ids), "pids": pids, "squares": squares}))
rc.close()
"""


# ------------------------------------------------------------------------------- helpers


async def wait_ports_free(ports: tuple[int, ...]) -> None:
    # Fixed ports: a previous test's engines may still be going away; anything else is a
    # collision with another run on this machine, which no retry can fix.
    async def free() -> bool:
        return not busy_ports(ports)

    try:
        await wait_for(free, 20, "fixed ports")
    except AssertionError:
        pytest.fail(f"ports {busy_ports(ports)} are in use: the engines need them (fixed ports)")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def family(pids: list[int]) -> set[int]:
    """The pids and all their descendants (Spark executors are children of the workers)."""
    found = set(pids)
    for pid in pids:
        try:
            found |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return found


def master_state() -> dict[str, Any]:
    try:
        with urllib.request.urlopen(MASTER_JSON, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return {}


def rules_allow(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


class Api(EmulatorHttp):
    """The emulator over plain HTTP, plus what these tests ask of it."""

    async def running_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        """Running, ready pods matching a label selector, not being deleted."""
        body = await self.get(f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
        return [
            p
            for p in body["items"]
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
        ]


def make_spawner(username: str, profile: str) -> KubeSpaceSpawner:
    from jupyterhub.objects import Hub
    from traitlets.config import Config

    from clusterhub.ports import free_port
    from clusterhub.spawner.kube import KubeSpaceSpawner

    port = free_port()
    cfg = Config()
    section = cfg.KubeSpaceSpawner
    section.hub_namespace = "hub"
    section.image = "notebook:test"
    section.cluster_image = "cluster:test"
    # As clusterhub's hub config sets it: KubeSpawner's default (None) is refused by the
    # engine Deployment builder.
    section.image_pull_policy = "IfNotPresent"
    # The engines are under test, not the notebook: a small server stands in for it.
    section.cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    section.port = port
    section.start_timeout = 60
    section.namespace_delete_timeout = 60
    spawner = KubeSpaceSpawner(
        hub=Hub(), user=StandInUser(username), config=cfg, api_token="t", oauth_client_id="unused"
    )
    spawner.user_options = {"profile": profile, "workers": 1}
    return spawner


@pytest_asyncio.fixture
async def api(kube_api: KubeCluster) -> AsyncIterator[Api]:
    # Per-test directories for what the engines write: never the real HOME, never the
    # venv (a Spark worker's default work dir is inside SPARK_HOME), never bare /tmp. In the
    # cluster's workdir, which engine pods (another user) can reach, and removed with it.
    files = {n: pod_shared_dir(kube_api.workdir / "pod-files" / n) for n in ("home", "work", "tmp")}
    assert kube_api.kubelet is not None
    kube_api.kubelet.base_env.update(
        {
            "HOME": files["home"],
            "SPARK_WORKER_DIR": files["work"],
            "SPARK_LOCAL_DIRS": files["tmp"],
            "JAVA_TOOL_OPTIONS": f"-Djava.io.tmpdir={files['tmp']} -XX:-UsePerfData",
        }
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(kube_api, session)


async def deployment_replicas(api: Api, ns: str) -> dict[str, int]:
    body = await api.get(f"/apis/apps/v1/namespaces/{ns}/deployments")
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in body["items"]}


async def engine_pods(api: Api, ns: str, engine: str, role: str, n: int) -> list[str]:
    selector = f"{ko.ENGINE_LABEL}={engine},{ko.ROLE_LABEL}={role}"

    async def running() -> list[str] | None:
        pods = await api.running_pods(ns, selector)
        return sorted(p["metadata"]["name"] for p in pods) if len(pods) == n else None

    return await wait_for(running, 60, f"{n} running {engine} {role} pod(s)")


def pod_pid(cluster: KubeCluster, ns: str, pod: str) -> int:
    assert cluster.kubelet is not None
    pids = cluster.kubelet.pod_pids(ns, pod)
    assert len(pids) == 1, (pod, pids)
    return pids[0]


def cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


async def exec_d(pid: int, text: str, program: str = "python") -> str:
    """The command line once the entrypoint has exec'd into ``program`` running ``text`` (a
    pod can be ready before that: with one shared network its probe may hit another pod's
    port; and Spark's path goes entrypoint -> bash spark-class -> java)."""

    async def switched() -> str | None:
        argv = psutil.Process(pid).cmdline()
        line = " ".join(argv)
        ok = argv and os.path.basename(argv[0]).startswith(program) and text in line
        return line if ok else None

    return await wait_for(switched, 30, f"pid {pid} to run {program} {text}", interval=0.05)


async def scale(api: Api, ns: str, deployment: str, replicas: int) -> None:
    """Scale as the notebook does: PATCH the scale subresource, which its Role allows."""
    assert rules_allow(ko.NOTEBOOK_ROLE_RULES, "apps", "deployments/scale", "patch")
    status, body = await api.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/{deployment}/scale",
        {"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    assert body["kind"] == "Scale" and body["spec"]["replicas"] == replicas


async def notebook_env(api: Api, spawner: KubeSpaceSpawner, engines: list[str]) -> dict[str, str]:
    """What the spawner gave the notebook pod of what make_notebook_env promises."""
    ns = spawner.namespace
    pod = await api.get(f"/api/v1/namespaces/{ns}/pods/{spawner.pod_name}")
    given = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    ipython_dir = ko.notebook_ipython_dir(spawner.notebook_home)
    expected = ko.make_notebook_env(ns, engines=engines, ipython_dir=ipython_dir)
    assert {k: given.get(k) for k in expected} == expected
    return expected


async def run_driver(
    api: Api,
    ns: str,
    script: str,
    env: dict[str, str],
    volumes: tuple[dict[str, Any], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Run ``script`` in a one-off pod of the space; its RESULT line, read via pods/log."""
    container: dict[str, Any] = {
        "name": "driver",
        "image": "python:test",
        "command": [sys.executable, "-c", script],
        "env": [
            {"name": k, "value": v} for k, v in {**env, "PYSPARK_PYTHON": sys.executable}.items()
        ],
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": NOTEBOOK_SERVICE_ACCOUNT,
        "containers": [container],
    }
    if volumes is not None:
        spec["volumes"] = [volumes[0]]
        container["volumeMounts"] = volumes[1]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        # A space member, like the notebook: the space's NetworkPolicies admit it.
        "metadata": {"name": "driver", "labels": ko.notebook_labels()},
        "spec": spec,
    }
    # The test creates it (as admin): the notebook's Role may not create pods; in a real
    # space this code runs in the notebook's kernel.
    status, body = await api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert status == 201, body

    async def finished() -> str | None:
        got = await api.get(f"/api/v1/namespaces/{ns}/pods/driver")
        phase = got["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = await wait_for(finished, 90, "driver pod to finish")
    status, log = await api.request("GET", f"/api/v1/namespaces/{ns}/pods/driver/log")
    assert status == 200, log
    assert phase == "Succeeded", log[-3000:]
    lines = [line for line in str(log).splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, log[-3000:]
    return json.loads(lines[0][len("RESULT ") :])


async def stop_and_check_gone(api: Api, spawner: KubeSpaceSpawner, pids: list[int]) -> None:
    """Stopping deletes the namespace; no engine process (nor any child) may survive."""
    everything = family(pids)
    await asyncio.wait_for(spawner.stop(), 90)
    status, _ = await api.request("GET", f"/api/v1/namespaces/{spawner.namespace}")
    assert status == 404

    async def gone() -> bool:
        return not any(alive(pid) for pid in everything)

    await wait_for(gone, 10, "engine processes to be gone")


# ------------------------------------------------------------------------------- tests

# What the engines rely on, checked first and fast: inside a pod, Service names resolve
# (also one created after the pod started), Secret/ConfigMap volumes appear at mount points
# the machine does not have, and the machine's own /etc is left alone.
DNS_PROBE = """
import json, os, socket, time
deadline = time.monotonic() + 15
while True:
    try:
        late = socket.gethostbyname("late.dns-a.svc.cluster.local")
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
names = ["early", "early.dns-a", "early.dns-a.svc", "other.dns-b.svc", socket.gethostname()]
secret = "/etc/clusterhub-test/secret/f1"
try:
    open(secret, "a").close()
    writable = True
except OSError:
    writable = False
print("RESULT " + json.dumps({
    "late": late,
    "resolved": {n: socket.gethostbyname(n) for n in names},
    "hosts": open("/etc/hosts").read(),
    "secret": open(secret).read(),
    "secret_files": sorted(os.listdir(os.path.dirname(secret))),
    "secret_mode": oct(os.stat(secret).st_mode & 0o777),
    "secret_writable": writable,
    "config": open("/etc/clusterhub-test/config/a.conf").read(),
}))
"""


@pytest.mark.asyncio
async def test_pods_resolve_services_and_mount_secret_volumes(
    kube_api: KubeCluster, api: Api
) -> None:
    async def create(path: str, body: dict[str, Any]) -> None:
        status, answer = await api.request("POST", path, body)
        assert status == 201, answer

    for ns in ("dns-a", "dns-b"):
        await create("/api/v1/namespaces", {"metadata": {"name": ns}})
    ports = {"ports": [{"port": 80}]}
    await create(
        "/api/v1/namespaces/dns-a/services", {"metadata": {"name": "early"}, "spec": ports}
    )
    await create(
        "/api/v1/namespaces/dns-b/services", {"metadata": {"name": "other"}, "spec": ports}
    )
    await create(
        "/api/v1/namespaces/dns-a/configmaps",
        {"metadata": {"name": "cm"}, "data": {"a.conf": "x=1"}},
    )
    pod = {
        "metadata": {"name": "probe"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {
                    "name": "s",
                    "secret": {
                        "secretName": "later",
                        "items": [{"key": "k1", "path": "f1", "mode": 0o400}],
                    },
                },
                {"name": "c", "configMap": {"name": "cm"}},
            ],
            "containers": [
                {
                    "name": "probe",
                    "image": "python:test",
                    "command": [sys.executable, "-c", DNS_PROBE],
                    "volumeMounts": [
                        {"name": "s", "mountPath": "/etc/clusterhub-test/secret", "readOnly": True},
                        {"name": "c", "mountPath": "/etc/clusterhub-test/config"},
                    ],
                }
            ],
        },
    }
    await create("/api/v1/namespaces/dns-a/pods", pod)

    # The Secret does not exist yet: the pod waits in ContainerCreating, as on a real node.
    async def waiting() -> str | None:
        got = await api.get("/api/v1/namespaces/dns-a/pods/probe")
        statuses = got["status"].get("containerStatuses") or [{}]
        return (statuses[0].get("state") or {}).get("waiting", {}).get("message")

    message = await wait_for(waiting, 10, "the pod to wait for its Secret")
    assert message == 'MountVolume.SetUp failed for volume "s" : secret "later" not found'
    await create(
        "/api/v1/namespaces/dns-a/secrets",
        {"metadata": {"name": "later"}, "stringData": {"k1": "v1", "k2": "v2"}},
    )

    async def running() -> bool:
        got = await api.get("/api/v1/namespaces/dns-a/pods/probe")
        return got["status"].get("phase") in ("Running", "Succeeded")

    await wait_for(running, 15, "the pod to start")
    # Created after the pod started: the kubelet rewrites the pod's hosts file in place.
    await create("/api/v1/namespaces/dns-a/services", {"metadata": {"name": "late"}, "spec": ports})

    async def finished() -> str | None:
        got = await api.get("/api/v1/namespaces/dns-a/pods/probe")
        phase = got["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = await wait_for(finished, 30, "the probe pod to finish")
    _, log = await api.request("GET", "/api/v1/namespaces/dns-a/pods/probe/log")
    assert phase == "Succeeded", log
    (line,) = [x for x in str(log).splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])
    assert result["late"] == "127.0.0.1"
    assert set(result["resolved"].values()) == {"127.0.0.1"}
    hosts = result["hosts"].splitlines()
    assert "127.0.0.1\tearly.dns-a.svc.cluster.local early.dns-a.svc early.dns-a early" in hosts
    # Another namespace's Service has no short name here.
    assert "127.0.0.1\tother.dns-b.svc.cluster.local other.dns-b.svc other.dns-b" in hosts
    assert result["secret"] == "v1" and result["secret_files"] == ["f1"]
    assert result["secret_mode"] == "0o400" and not result["secret_writable"]
    assert result["config"] == "x=1"
    # The mount points were made inside the pod only.
    assert not await asyncio.to_thread(os.path.exists, "/etc/clusterhub-test")


@pytest.mark.slow
@pytest.mark.asyncio
@ENGINE_OPTIONS
async def test_spark_space_scales_and_runs_a_job_from_a_pod(
    kube_api: KubeCluster, api: Api
) -> None:
    from kubespawner import KubeSpawner

    await wait_ports_free(SPARK_PORTS)
    spawner = make_spawner("sparky", "dask-spark")
    try:
        await asyncio.wait_for(spawner.start(), 90)
        ns = spawner.namespace
        assert await deployment_replicas(api, ns) == {"spark-master": 1, "spark-worker": 1}

        (master,) = await engine_pods(api, ns, "spark", "master", 1)
        (worker,) = await engine_pods(api, ns, "spark", "worker", 1)
        # Real JVMs: the entrypoint exec'd spark-class, which exec'd java.
        master_pid, worker_pid = pod_pid(kube_api, ns, master), pod_pid(kube_api, ns, worker)
        await exec_d(master_pid, "org.apache.spark.deploy.master.Master", "java")
        worker_line = await exec_d(worker_pid, "org.apache.spark.deploy.worker.Worker", "java")
        # The worker dials the master as spark-master.<ns>.svc: Service DNS in the pod.
        assert f"spark://spark-master.{ns}.svc:7077" in worker_line

        async def alive_workers(n: int) -> bool:
            state = await asyncio.to_thread(master_state)
            return state.get("aliveworkers") == n

        await wait_for(lambda: alive_workers(1), 60, "the worker to register")

        await scale(api, ns, "spark-worker", 2)
        workers = await engine_pods(api, ns, "spark", "worker", 2)
        assert worker in workers
        (new_worker,) = set(workers) - {worker}
        new_pid = pod_pid(kube_api, ns, new_worker)
        await exec_d(new_pid, "org.apache.spark.deploy.worker.Worker", "java")
        await wait_for(lambda: alive_workers(2), 60, "the second worker to register")
        assert (await deployment_replicas(api, ns))["spark-worker"] == 2

        env = await notebook_env(api, spawner, ["dask", "spark"])
        result = await run_driver(api, ns, SPARK_DRIVER, env)
        assert result == {
            "master": env["MASTER"],
            "executors": 2,
            "sum": sum(i * i for i in range(1, 1001)),
        }

        await stop_and_check_gone(api, spawner, [master_pid, worker_pid, new_pid])
    finally:
        await KubeSpawner._stop_all_reflectors()


@pytest.mark.slow
@pytest.mark.asyncio
@ENGINE_OPTIONS
async def test_ipyparallel_space_scales_and_runs_a_map_from_a_pod(
    kube_api: KubeCluster, api: Api
) -> None:
    from kubespawner import KubeSpawner

    await wait_ports_free(tuple(ko.IPYPARALLEL_PORTS.values()))
    spawner = make_spawner("ipp", "dask-ipyparallel")
    try:
        await asyncio.wait_for(spawner.start(), 90)
        ns = spawner.namespace
        assert await deployment_replicas(api, ns) == {"ipcontroller": 1, "ipengine": 1}

        # Ready = listening on the registration port from the Secret's connection files
        # (which only the Secret volume puts at the path the controller's args name).
        (controller,) = await engine_pods(api, ns, "ipyparallel", "controller", 1)
        (engine,) = await engine_pods(api, ns, "ipyparallel", "engine", 1)
        controller_pid = pod_pid(kube_api, ns, controller)
        engine_pid = pod_pid(kube_api, ns, engine)
        assert "--reuse" in (await exec_d(controller_pid, "ipyparallel.controller")).split()
        await exec_d(engine_pid, "ipyparallel.engine")
        # The engine's connection info is the Secret's engine file (via secretKeyRef); it
        # names the controller by its Service, which only the pod's hosts file resolves.
        secret = await api.get(f"/api/v1/namespaces/{ns}/secrets/{ko.IPYPARALLEL_SECRET_NAME}")
        engine_file = base64.b64decode(secret["data"][ko.IPYPARALLEL_ENGINE_FILE]).decode()
        info = psutil.Process(engine_pid).environ()["IPP_CONNECTION_INFO"]
        assert info == engine_file
        assert json.loads(info)["location"] == f"ipcontroller.{ns}.svc"

        async def registered(n: int) -> bool:
            status, log = await api.request("GET", f"/api/v1/namespaces/{ns}/pods/{controller}/log")
            return status == 200 and str(log).count("finished registering engine") >= n

        await wait_for(lambda: registered(1), 60, "the engine to register")

        await scale(api, ns, "ipengine", 2)
        engines = await engine_pods(api, ns, "ipyparallel", "engine", 2)
        (new_engine,) = set(engines) - {engine}
        new_pid = pod_pid(kube_api, ns, new_engine)
        await exec_d(new_pid, "ipyparallel.engine")
        await wait_for(lambda: registered(2), 60, "the second engine to register")

        env = await notebook_env(api, spawner, ["dask", "ipyparallel"])
        # The notebook's own client-file mounts (its image's home is not on this machine:
        # the kubelet makes the mount point in an overlay private to the pod).
        volume, mount = ko.make_ipyparallel_notebook_volume()
        mounts = [mount, ko.make_ipython_security_mount(spawner.notebook_home)]
        result = await run_driver(api, ns, IPP_DRIVER, env, volumes=(volume, mounts))
        assert result["engines"] == 2
        assert result["squares"] == [x * x for x in range(10)]
        # The work ran in the two engine pods' processes.
        assert sorted(result["pids"]) == sorted([engine_pid, new_pid])

        await stop_and_check_gone(api, spawner, [controller_pid, engine_pid, new_pid])
    finally:
        await KubeSpawner._stop_all_reflectors()
