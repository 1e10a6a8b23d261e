"""The Clusters core against real engines, without the hub.

A real Dask Gateway server (clusterhub's LocalSpaceBackend, configured by
clusterhub's own gateway config, with a password instead of JupyterHub auth), a
Spark standalone master and an IPyParallel controller belong to one space. Every
worker has a hostname of its own (the Dask workers through ``unshare --uts``, Spark's
and IPyParallel's as their engines start them), and every task reports the hostname
it saw, so each task record can be checked against the worker that really ran it.

One gateway, one Spark cluster and one controller serve the module; everything
is stopped and the space swept at the end, failed or not.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest
from waiting import wait_for

from clusterhub import procs
from clusterhub.engines import local_engine
from clusterhub.hostnames import worker_hostname
from clusterhub.labextension.dask_clusters import close_gateway
from clusterhub.ports import free_port
from clusterhub.settings import SETTINGS_ENV, PlatformSettings
from clusterhub.space import LocalSpace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
    pytest.mark.skipif(os.geteuid() != 0, reason="unshare --uts needs root"),
]

USER = "tester"
PASSWORD = "core-test-password"
LIMITS = {"workers": 3, "worker_cores": 2, "worker_memory_gib": 2}

# Gives a process its own UTS namespace and hostname, then becomes the command.
IN_OWN_HOSTNAME = 'hostname "$0" && exec "$@"'

# The gateway starts each Dask worker through this: its hostname is "dw-<worker name>".
WORKER_WRAPPER = """\
name=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "--name" ]; then name="$arg"; fi
    previous="$arg"
done
hostname "dw-$name"
exec "$@"
"""

GATEWAY_CONFIG = """
from clusterhub.gateway.config import configure_gateway
from clusterhub.settings import PlatformSettings

c = get_config()  # noqa: F821
configure_gateway(c, PlatformSettings.load())
# As clusterhub configures it, but with a password instead of JupyterHub tokens and
# every worker in a UTS namespace of its own.
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.ClusterConfig.worker_cmd = ["unshare", "--uts", "sh", {wrapper!r}] + c.ClusterConfig.worker_cmd
"""

SPARK_DRIVER = """
import json, socket, sys, time
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("clusterhub-core-test").getOrCreate()
sc = spark.sparkContext
deadline = time.time() + 240
while sc._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.time() < deadline:
    time.sleep(0.2)

def where(index, rows):
    time.sleep(0.3)
    return [(index, socket.gethostname())]

rows = sc.parallelize(range(8), 8).mapPartitionsWithIndex(where).collect()
print(json.dumps({"app": sc.applicationId, "rows": rows}), flush=True)
sys.stdin.read()  # keep the driver (and its REST API) up until the test is done
spark.stop()
"""


def refused(call, status: int, *fragments: str):
    """``call()`` must raise UserError with ``status`` and a message with ``fragments``."""
    from clusterhub.usererror import UserError

    with pytest.raises(UserError) as info:
        call()
    assert info.value.status == status, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value


# -- the space and its engines ---------------------------------------------------------------
@pytest.fixture(scope="module")
def space(tmp_path_factory):
    root = tmp_path_factory.mktemp("clusters-core")
    space = LocalSpace(str(root / "data"), USER)
    space.create()
    space.write_state(
        active=True,
        limits=LIMITS,
        engines={"spark": "running", "ipyparallel": "running"},
    )
    try:
        yield space
    finally:
        # Every fixture stopped what it started; anything found here is a leak (then killed).
        leftovers = [" ".join(p.cmdline())[:200] for p in space.processes()]
        space.sweep()
        procs.sweep(procs.PLATFORM_MARKER, os.path.abspath(space.data_dir))
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def gateway_settings(space):
    from cryptography.fernet import Fernet

    settings = PlatformSettings(
        data_dir=space.data_dir,
        workshop_code="not-used-here",
        admin_password="not-used-here",
        gateway_encrypt_key=Fernet.generate_key().decode(),
        gateway_api_port=free_port(),
        gateway_http_port=free_port(),
        gateway_tcp_port=free_port(),
    )
    run = settings.path("run")
    os.makedirs(settings.path("gateway"), exist_ok=True)
    settings.save(os.path.join(run, "settings.json"))
    wrapper = os.path.join(run, "dask-worker-hostname.sh")
    with open(wrapper, "w") as f:
        f.write(WORKER_WRAPPER)
    config = os.path.join(run, "dask_gateway_config.py")
    with open(config, "w") as f:
        f.write(GATEWAY_CONFIG.format(password=PASSWORD, wrapper=wrapper))
    env = {
        **os.environ,
        SETTINGS_ENV: os.path.join(run, "settings.json"),
        procs.PLATFORM_MARKER: os.path.abspath(space.data_dir),
        "HOME": run,
    }
    server = os.path.join(os.path.dirname(sys.executable), "dask-gateway-server")
    with open(os.path.join(run, "gateway.log"), "w") as log:
        proc = subprocess.Popen(
            [server, "-f", config],
            cwd=run,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        # The proxy listens first; the API answers once the gateway has registered its route.
        wait_for(lambda: gateway_healthy(settings), 60, "the gateway's API")
        yield settings
    finally:
        proc.terminate()  # the gateway stops its clusters on the way out
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def gateway_healthy(settings: PlatformSettings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.gateway_url}/api/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def make_gateway(settings: PlatformSettings):
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth

    return Gateway(
        address=settings.gateway_url,
        proxy_address=settings.gateway_proxy_address,
        auth=BasicAuth(USER, PASSWORD),
    )


@pytest.fixture(scope="module")
def gateway(gateway_settings):
    gateway = make_gateway(gateway_settings)
    try:
        yield gateway
    finally:
        close_gateway(gateway)


@pytest.fixture(scope="module")
def clusters(space, gateway):
    from clusterhub.labextension.core import Clusters

    clusters = Clusters(space=space, gateway=gateway)
    try:
        yield clusters
    finally:
        clusters.close()


def find(clusters, engine: str, name: str) -> dict | None:
    for entry in clusters.list_engines():
        if entry["engine"] == engine and entry["name"] == name:
            return entry
    return None


# -- refusals ----------------------------------------------------------------------------------
def test_bad_requests_are_refused_and_change_nothing(clusters, gateway):
    from clusterhub.labextension.core import LOCAL_CLUSTER_NAME

    before = [c.name for c in gateway.list_clusters()]
    for bad in (-1, 10**9, "three", True, 2.5, None, [2]):
        error = refused(lambda bad=bad: clusters.scale("dask", "nope", bad), 400, "workers:")
        assert error.field == "workers"
    refused(lambda: clusters.scale("dask", "nope", 4), 422, "limit of 3")
    refused(lambda: clusters.scale("ipyparallel", LOCAL_CLUSTER_NAME, 64), 422, "limit of 3")
    refused(lambda: clusters.scale("dask", "nope", 1), 404, "nope")
    refused(lambda: clusters.scale("flink", "x", 1), 404, "unknown engine 'flink'")
    refused(lambda: clusters.scale("spark", "other", 1), 404, "named 'default'")
    refused(lambda: clusters.adapt("nope", 2, 1), 400, "adapt.minimum")
    refused(lambda: clusters.adapt("nope", 0, 4), 422, "limit of 3")
    refused(lambda: clusters.adapt("nope", "0", 2), 400, "adapt.minimum")
    refused(lambda: clusters.update("spark", LOCAL_CLUSTER_NAME, {"adapt": {}}), 400, "only Dask")
    refused(lambda: clusters.update("dask", "nope", {"workers": 1, "adapt": {}}), 400, "either")
    refused(lambda: clusters.task_records("dask", "nope", since="yesterday"), 400, "since")
    refused(lambda: clusters.task_records("dask", "nope", since=-1), 400, "since")
    refused(lambda: clusters.task_records("dask", "nope"), 404)
    refused(lambda: clusters.stop("dask", "nope"), 404)
    refused(lambda: clusters.new_dask_cluster(worker_cores=3), 422, "limit of 2")
    refused(lambda: clusters.new_dask_cluster(worker_memory=64), 422, "limit of 2")
    refused(lambda: clusters.new_dask_cluster(worker_cores="two"), 400, "worker_cores")
    refused(lambda: clusters.new_dask_cluster(flavour="large"), 400, "unknown cluster option")
    refused(lambda: clusters.new_dask_cluster(self=1), 400, "unknown cluster option")
    refused(lambda: clusters.new_dask_cluster(workers=4), 422, "limit of 3")
    assert [c.name for c in gateway.list_clusters()] == before, "no cluster was made"


def test_an_unreachable_gateway_is_shown_not_fatal(tmp_path):
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth

    from clusterhub.labextension.core import Clusters

    space = LocalSpace(str(tmp_path / "data"), "offline")
    space.create()
    space.write_state(active=True, limits=LIMITS, engines={"ipyparallel": "starting"})
    # A port that is bound but not listening: connections are refused, nobody can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{closed.getsockname()[1]}"
        gateway = Gateway(address=address, auth=BasicAuth("x", "y"))
        clusters = Clusters(space=space, gateway=gateway)
        try:
            listed = {entry["engine"]: entry for entry in clusters.list_engines()}
            assert listed["dask"]["state"] == "unavailable"
            assert "Dask Gateway failed" in listed["dask"]["error"]
            assert listed["ipyparallel"]["state"] == "stopped", "the other engines still show"
            refused(lambda: clusters.new_dask_cluster(), 503)
        finally:
            clusters.close()
            close_gateway(gateway)


# -- Dask --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_cluster(clusters, gateway):
    created = clusters.new_dask_cluster(workers=2, worker_cores=1)
    try:
        yield created["name"]
    finally:
        if created["name"] in {c.name for c in gateway.list_clusters()}:
            gateway.stop_cluster(created["name"])


def workers_of(clusters, name: str) -> int:
    return clusters.describe("dask", name)["workers"]


def test_new_dask_cluster_is_listed_with_its_workers(clusters, dask_cluster):
    assert wait_for(lambda: workers_of(clusters, dask_cluster) == 2, 60, "2 Dask workers")
    entry = find(clusters, "dask", dask_cluster)
    assert entry["state"] == "running"
    assert entry["cores"] == 2
    assert entry["memory"] == 2 * 2**30, "1 GiB per worker by default"
    assert entry["dashboard"].endswith(f"/clusters/{dask_cluster}/status")


def test_dask_records_name_the_hostname_each_task_ran_on(clusters, gateway, dask_cluster):
    wait_for(lambda: workers_of(clusters, dask_cluster) == 2, 60, "2 Dask workers")
    clusters.task_records("dask", dask_cluster)  # the plugin records from here on
    cluster = gateway.connect(dask_cluster)
    client = cluster.get_client(set_as_default=False)
    try:

        def where(i):
            from distributed import get_worker

            time.sleep(0.05)
            return socket.gethostname(), get_worker().address

        futures = client.map(where, range(20))
        seen = dict(zip([f.key for f in futures], client.gather(futures), strict=True))
    finally:
        client.close()
        cluster.close()

    answer = clusters.task_records("dask", dask_cluster)
    records = {r["task"]: r for r in answer["records"] if r["task"] in seen}
    assert set(records) == set(seen), "every task has a record"
    for key, (hostname, worker) in seen.items():
        assert records[key]["hostname"] == hostname, key
        assert records[key]["worker"] == worker, key
        assert records[key]["started"] <= records[key]["finished"]
    hostnames = {hostname for hostname, _ in seen.values()}
    assert len(hostnames) == 2 and all(h.startswith("dw-") for h in hostnames), hostnames
    assert answer["counts"] == dict(Counter(h for h, _ in seen.values()))

    again = clusters.task_records("dask", dask_cluster, since=answer["cursor"])
    assert again["records"] == [] and again["cursor"] == answer["cursor"]


def test_dask_scale_and_adapt(clusters, dask_cluster):
    clusters.scale("dask", dask_cluster, 1)
    wait_for(lambda: workers_of(clusters, dask_cluster) == 1, 60, "scale down to 1")
    clusters.update("dask", dask_cluster, {"adapt": {"minimum": 2, "maximum": 3}})
    wait_for(lambda: workers_of(clusters, dask_cluster) == 2, 60, "adapt up to its minimum 2")
    clusters.scale("dask", dask_cluster, 0)  # an explicit scale ends adaptive scaling
    wait_for(lambda: workers_of(clusters, dask_cluster) == 0, 60, "scale down to 0")


def test_dask_stop(clusters, gateway, dask_cluster):
    clusters.stop("dask", dask_cluster)
    assert dask_cluster not in {c.name for c in gateway.list_clusters()}
    assert find(clusters, "dask", dask_cluster) is None
    refused(lambda: clusters.task_records("dask", dask_cluster), 404)
    refused(lambda: clusters.stop("dask", dask_cluster), 404)


def test_the_default_core_is_configured_by_the_environment(space, gateway_settings):
    """As in a notebook server: the space from CLUSTERHUB_SPACE, the gateway from DASK_GATEWAY_*."""
    code = (
        "import json\n"
        "from clusterhub.labextension import core\n"
        "made = core.new_dask_cluster(workers=1)\n"
        "listed = [(c['engine'], c['name']) for c in core.list_engines()]\n"
        "core.stop('dask', made['name'])\n"
        "after = [(c['engine'], c['name']) for c in core.list_engines()]\n"
        "print(json.dumps({'made': made['name'], 'listed': listed, 'after': after}))\n"
    )
    env = {
        **os.environ,
        **space.marker_env(),
        "HOME": space.root,
        "DASK_GATEWAY__ADDRESS": gateway_settings.gateway_url,
        "DASK_GATEWAY__PROXY_ADDRESS": gateway_settings.gateway_proxy_address,
        "DASK_GATEWAY__AUTH__TYPE": "basic",
        "DASK_GATEWAY__AUTH__KWARGS__USERNAME": USER,
        "DASK_GATEWAY__AUTH__KWARGS__PASSWORD": PASSWORD,
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert ["dask", out["made"]] in out["listed"]
    assert ["dask", out["made"]] not in out["after"]
    assert ["ipyparallel", "default"] in out["listed"], "local engines come from space.json"


# -- IPyParallel -------------------------------------------------------------------------------
def start_ipengine(space, engine, hostname: str) -> procs.ProcessRecord:
    """An IPyParallel engine of the space, in a UTS namespace with its own hostname."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "VIRTUAL_ENV") if k in os.environ}
    env.update(space.marker_env())
    env.update(HOME=space.path("ipyparallel"), IPYTHONDIR=engine.ipython_dir)
    command = [sys.executable, "-m", "ipyparallel.engine", f"--profile-dir={engine.profile_dir}"]
    return procs.launch_detached(
        ["unshare", "--uts", "sh", "-c", IN_OWN_HOSTNAME, hostname, *command],
        env=env,
        cwd=space.path("ipyparallel"),
        log_path=space.path("ipyparallel", "logs", f"{hostname}.log"),
    )


@pytest.fixture(scope="module")
def ipyparallel(space):
    engine = local_engine("ipyparallel", space)
    extras: list[procs.ProcessRecord] = []
    try:
        engine.start(0)
        yield engine, extras
    finally:
        procs.terminate(extras, timeout=5)
        engine.stop()


def ipp_workers(clusters) -> int:
    return clusters.describe("ipyparallel", "default")["workers"]


def test_ipyparallel_records_name_the_hostname_each_task_ran_on(clusters, space, ipyparallel):
    import ipyparallel as ipp

    engine, extras = ipyparallel
    extras.extend(start_ipengine(space, engine, name) for name in ("ipp-a", "ipp-b"))
    wait_for(lambda: ipp_workers(clusters) == 2, 60, "2 engines with their own hostnames")

    client = ipp.Client(engine.status().address, timeout=10)
    try:
        client[:].use_cloudpickle()  # functions of a test module are not importable there
        view = client.load_balanced_view()

        def where(i):
            time.sleep(0.05)
            return socket.gethostname()

        result = view.map_async(where, range(16))
        hostnames = result.get(60)
        seen = dict(zip(result.msg_ids, hostnames, strict=True))
    finally:
        client.close()
    assert set(hostnames) == {"ipp-a", "ipp-b"}, hostnames

    answer = clusters.task_records("ipyparallel", "default")
    records = {r["task"]: r for r in answer["records"] if r["task"] in seen}
    assert set(records) == set(seen), "every task has a record"
    for msg_id, hostname in seen.items():
        assert records[msg_id]["hostname"] == hostname, msg_id
        assert records[msg_id]["engine"] == "ipyparallel"
    # Also the two tasks of use_cloudpickle(), one on each engine.
    assert answer["counts"] == dict(Counter(r["hostname"] for r in answer["records"]))
    assert set(answer["counts"]) == {"ipp-a", "ipp-b"}
    assert clusters.task_records("ipyparallel", "default", since=answer["cursor"])["records"] == []


def test_ipyparallel_scale(clusters, ipyparallel):
    engine, extras = ipyparallel
    clusters.scale("ipyparallel", "default", 2)  # two of the engine's own beside the two extras
    wait_for(lambda: ipp_workers(clusters) == 4, 60, "4 IPyParallel engines")
    entry = find(clusters, "ipyparallel", "default")
    assert entry["state"] == "running" and entry["requested_workers"] == 2
    clusters.scale("ipyparallel", "default", 0)
    # The hub counts a stopped engine until its heartbeats are missed (~30 s): check the
    # processes instead.
    details = engine.status().details
    assert details == {"requested_workers": 0, "engine_processes": 0}


# -- Spark -------------------------------------------------------------------------------------
def spark_missing() -> str | None:
    from clusterhub.engines.local_spark import java_missing_reason

    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed"
    return java_missing_reason()


SPARK_MISSING = spark_missing()
needs_spark = pytest.mark.skipif(SPARK_MISSING is not None, reason=str(SPARK_MISSING))

# The engine's own two workers, each a host of its own: the hostname a task sees is the one
# Spark records for it.
SPARK_WORKERS = [worker_hostname(USER, "spark", n) for n in (1, 2)]


def start_spark_driver(space, engine) -> subprocess.Popen:
    """A SparkContext in a process of its own, as in a kernel; it runs one job as soon as
    both workers have an executor, prints what ran where, and waits for its stdin to close."""
    env = {**os.environ, **engine.client_env(), **space.marker_env(), "HOME": space.root}
    return subprocess.Popen(
        [sys.executable, "-c", SPARK_DRIVER],
        env=env,
        cwd=space.root,  # Spark may write a warehouse directory into its working directory
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def stop_spark_driver(driver: subprocess.Popen) -> None:
    if driver.poll() is None:
        driver.stdin.close()  # the driver stops its SparkContext and exits
        try:
            driver.wait(60)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(10)


@pytest.fixture(scope="module")
def spark(space):
    """The space's Spark master and two workers (hosts of their own), and a driver started
    through the engine's client environment, as a kernel's is."""
    engine = local_engine("spark", space)
    driver = None
    try:
        engine.start(2)
        driver = start_spark_driver(space, engine)
        yield engine, driver
    finally:
        if driver is not None:
            stop_spark_driver(driver)
        engine.stop()


@pytest.mark.spark
@needs_spark
def test_spark_is_listed_with_its_workers(clusters, spark):
    engine, _ = spark
    entry = wait_for(
        lambda: (e := find(clusters, "spark", "default")) and e["workers"] == 2 and e,
        120,
        "2 Spark workers",
    )
    assert entry["state"] == "running"
    assert entry["cores"] == 2 and entry["memory"] == 2 * 2**30
    assert entry["dashboard"] == engine.status().dashboard


@pytest.mark.spark
@needs_spark
def test_spark_records_name_the_host_each_task_ran_on(clusters, spark):
    _, driver = spark
    try:
        line = driver.stdout.readline()
        assert line, "the Spark driver died"
        ran = json.loads(line)
        check_spark_records(clusters, ran)
    finally:
        stop_spark_driver(driver)  # before the master goes, so that it ends cleanly


def check_spark_records(clusters, ran):
    hostname_of = {index: hostname for index, hostname in ran["rows"]}
    assert set(hostname_of.values()) == set(SPARK_WORKERS), "both workers ran tasks"
    # Each worker's own hostname is its host in Spark too (not 127.0.0.1).
    answer = wait_for(
        lambda: (a := clusters.task_records("spark", "default"))["records"] and a,
        30,
        "Spark task records",
    )
    records = [r for r in answer["records"] if r["app"] == ran["app"]]
    assert sorted(r["partition"] for r in records) == list(range(8))
    for record in records:
        assert record["hostname"] == hostname_of[record["partition"]], record
        assert record["state"] == "done" and record["started"] <= record["finished"]
    assert answer["counts"] == dict(Counter(hostname_of.values()))
    assert clusters.task_records("spark", "default", since=answer["cursor"])["records"] == []


@pytest.mark.spark
@needs_spark
def test_spark_scale_and_stop(clusters, spark):
    engine, _ = spark
    # Down from the fixture's two workers: the highest goes first, and the master lets go.
    entry = clusters.scale("spark", "default", 1)
    assert entry["requested_workers"] == 1
    assert engine._running_instances() == [1]
    entry = clusters.scale("spark", "default", 0)
    assert entry["requested_workers"] == 0 and engine._running_instances() == []
    wait_for(lambda: find(clusters, "spark", "default")["workers"] == 0, 60, "workers gone")
    clusters.stop("spark", "default")
    assert find(clusters, "spark", "default")["state"] == "stopped"
    refused(lambda: clusters.task_records("spark", "default"), 409, "stopped")
