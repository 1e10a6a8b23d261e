"""The container images: built from the repository onto a plain Debian bookworm (debootstrap,
no Python) by images/build.sh in a private dockerd, then run on the host network, bound to
127.0.0.1: a Dask scheduler and two workers, a Spark master and worker, an IPyParallel
controller and two engines (each driven from this process), the notebook server with our
extension, and the hub with its proxy and gateway. Also: non-root users, health checks, the
extra CA certificates, and the size budgets of images/README.md.

One session fixture starts the daemon and builds everything (a few minutes); its teardown
removes every container, the daemon and all its data.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dockertools import (
    NAMES,
    PREFIX,
    REPO,
    TAG,
    DockerDaemon,
    build_images,
    cache_dir,
    debootstrap_tarball,
    docker_daemon,
    extra_ca_dir,
    http_get,
    import_base,
    missing_requirements,
    processes_under,
    run_args,
    size_budgets,
)
from waiting import wait_for as _wait_for

pytestmark = [
    pytest.mark.images,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    # The test venv's Python may be another 3.11.x than Debian's in the images; only the
    # minor version matters to Dask's pickles.
    pytest.mark.filterwarnings("ignore::distributed.versions.VersionMismatchWarning"),
]

HUB = f"{PREFIX}/hub:{TAG}"
NOTEBOOK = f"{PREFIX}/notebook:{TAG}"
CLUSTER = f"{PREFIX}/cluster:{TAG}"
LOOPBACK = {"CLUSTERHUB_BIND_HOST": "127.0.0.1"}
USER_ID = 1000
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Containers take a while to come up: an error (no connection yet, docker inspect racing the
# start) means "not yet".
wait_for = functools.partial(_wait_for, interval=0.5, retry_on=(Exception,))


def free_port() -> int:
    from clusterhub.ports import free_port as chosen_port  # outside the ephemeral range

    return chosen_port()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def docker(tmp_path_factory) -> Iterator[DockerDaemon]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("images")
    with docker_daemon() as daemon:
        started = time.monotonic()
        # (pytest keeps a session fixture's error: a failed build is not retried per test)
        base = import_base(daemon, work / "debootstrap.log")
        daemon.timings["debootstrap+import"] = round(time.monotonic() - started)
        daemon.timings.update(
            build_images(daemon, base_image=base, ca_dir=extra_ca_dir(), work=work)
        )
        daemon.timings["total"] = round(time.monotonic() - started)
        yield daemon


class Containers:
    """The containers of one test: started on the host network, removed afterwards."""

    def __init__(self, docker: DockerDaemon):
        self.docker = docker
        self.names: list[str] = []

    def run(
        self,
        role: str,
        image: str,
        *args: str,
        env: dict[str, str] | None = None,
        volumes: tuple[str, ...] = (),
        options: tuple[str, ...] = (),
    ) -> str:
        name = f"clusterhub-test-{os.getpid()}-{role}"
        self.names.append(name)
        self.docker.docker(*run_args(name, image, *args, env=env, volumes=volumes, options=options))
        return name

    def exec(self, name: str, *args: str) -> str:
        result = self.docker.docker("exec", name, *args)
        return result.stdout + result.stderr

    def wait_healthy(self, name: str, timeout: float = 120) -> None:
        def healthy() -> bool:
            status = self.docker.health(name)
            if status == "unhealthy":
                raise AssertionError(f"{name} is unhealthy: {self.docker.inspect(name)['State']}")
            return status == "healthy"

        wait_for(healthy, timeout, f"{name} to be healthy")

    @contextmanager
    def explain(self) -> Iterator[None]:
        """Failures inside carry the logs of this test's containers."""
        try:
            yield
        except Exception as exc:
            logs = "\n".join(f"--- {n} ---\n{self.docker.logs(n)}" for n in self.names)
            raise AssertionError(f"{exc!r}\n{logs}") from exc

    def remove(self) -> None:
        if self.names:
            self.docker.docker("rm", "-f", *self.names, check=False)


@pytest.fixture
def containers(docker: DockerDaemon) -> Iterator[Containers]:
    running = Containers(docker)
    try:
        yield running
    finally:
        running.remove()


def owned_by_user(path: Path) -> Path:
    """A directory the images' user (uid 1000) can write."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, USER_ID, USER_ID)
    return path


# -- engines ----------------------------------------------------------------------------------
def test_a_dask_scheduler_and_two_worker_containers_run_tasks(containers: Containers):
    from distributed import Client

    port, dashboard = free_port(), free_port()
    scheduler = containers.run(
        "dask-scheduler", CLUSTER, "dask-scheduler",
        "--port", str(port), "--dashboard-address", f"127.0.0.1:{dashboard}",
        env=LOOPBACK,
    )  # fmt: skip
    for i in (1, 2):
        containers.run(
            f"dask-worker-{i}", CLUSTER, "dask-worker",
            "--nthreads", "1", "--dashboard-address", "127.0.0.1:0",
            env={**LOOPBACK, "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}"},
        )  # fmt: skip
    with containers.explain():
        wait_for(lambda: port_open(port), 120, "the scheduler to listen")
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            squares = client.gather(client.map(pow, range(20), [2] * 20))
            assert sum(squares) == sum(i * i for i in range(20))
            # the tasks ran in the containers, as the image's user
            assert sorted(client.run(os.getuid).values()) == [USER_ID, USER_ID]
        containers.wait_healthy(scheduler)


SPARK_DRIVER = """
import os, sys
from pyspark.sql import SparkSession

spark = (
    SparkSession.builder.master(sys.argv[1])
    .appName("clusterhub-image-test")
    .config("spark.driver.host", "127.0.0.1")
    .config("spark.driver.bindAddress", "127.0.0.1")
    .config("spark.ui.enabled", "false")
    .config("spark.executor.memory", "512m")
    .getOrCreate()
)
rdd = spark.sparkContext.parallelize(range(100), 4)
print(rdd.map(lambda x: x * x).sum())
print(sorted(set(rdd.map(lambda _: os.getuid()).collect())))
spark.stop()
"""


@pytest.mark.spark
def test_a_spark_master_and_worker_container_run_a_job(containers: Containers, tmp_path: Path):
    master_port, master_ui, worker_ui = free_port(), free_port(), free_port()
    master = containers.run(
        "spark-master", CLUSTER, "spark-master",
        env={**LOOPBACK, "SPARK_MASTER_PORT": str(master_port),
             "SPARK_MASTER_WEBUI_PORT": str(master_ui)},
    )  # fmt: skip
    containers.run(
        "spark-worker", CLUSTER, "spark-worker", "--cores", "2", "--memory", "1g",
        env={**LOOPBACK, "SPARK_MASTER_URL": f"spark://127.0.0.1:{master_port}",
             "SPARK_WORKER_WEBUI_PORT": str(worker_ui)},
    )  # fmt: skip

    def workers_alive() -> bool:
        status, body = http_get(f"http://127.0.0.1:{master_ui}/json/")
        return status == 200 and json.loads(body).get("aliveworkers") == 1

    # The driver runs here (its own process: one SparkContext per process, and no other
    # test's Spark settings); executors run in the worker container and find `python3` there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path), PYSPARK_PYTHON="python3")
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    # Every JVM here (spark-submit's launcher, the driver): no /tmp/hsperfdata_<user> left.
    env["JAVA_TOOL_OPTIONS"] = f"-Djava.io.tmpdir={tmp_path} -XX:-UsePerfData"
    with containers.explain():
        wait_for(workers_alive, 180, "the Spark worker to register")
        driver = subprocess.run(
            [sys.executable, "-c", SPARK_DRIVER, f"spark://127.0.0.1:{master_port}"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert driver.returncode == 0, driver.stderr[-4000:]
        assert driver.stdout.split() == [str(sum(i * i for i in range(100))), f"[{USER_ID}]"]
        containers.wait_healthy(master)


def test_an_ipcontroller_and_two_ipengine_containers_run_a_map(
    containers: Containers, tmp_path: Path
):
    import ipyparallel as ipp

    shared = owned_by_user(tmp_path / "ipp")
    containers.run(
        "ipcontroller", CLUSTER, "ipcontroller",
        "--IPController.engine_json_file=/ipp/ipcontroller-engine.json",
        "--IPController.client_json_file=/ipp/ipcontroller-client.json",
        env=LOOPBACK, volumes=(f"{shared}:/ipp",),
    )  # fmt: skip
    engine_file = shared / "ipcontroller-engine.json"
    client_file = shared / "ipcontroller-client.json"
    with containers.explain():
        wait_for(lambda: engine_file.exists() and client_file.exists(), 120, "connection files")
        # as in Kubernetes: engines get the connection info in $IPP_CONNECTION_INFO, no files
        info = engine_file.read_text()
        engines = [
            containers.run(f"ipengine-{i}", CLUSTER, "ipengine", env={"IPP_CONNECTION_INFO": info})
            for i in (1, 2)
        ]
        client = ipp.Client(str(client_file), timeout=60)
        try:
            client.wait_for_engines(2, timeout=120)
            view = client[:]
            assert view.map_sync(pow, range(10), [2] * 10) == [i * i for i in range(10)]
            assert view.apply_sync(os.getuid) == [USER_ID, USER_ID]
        finally:
            client.close()
        containers.wait_healthy(engines[0])


# -- notebook and hub -------------------------------------------------------------------------
def test_the_notebook_image_serves_jupyterlab_with_the_clusters_extension(
    containers: Containers,
):
    port = free_port()
    notebook = containers.run(
        "notebook", NOTEBOOK, "jupyter", "lab", "--ip=127.0.0.1", f"--port={port}",
        "--IdentityProvider.token=x", "--no-browser",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with containers.explain():
        wait_for(lambda: http_get(f"{base}/api?token=x")[0] == 200, 120, "JupyterLab's /api")
        assert "version" in json.loads(http_get(f"{base}/api?token=x")[1])
        status, _ = http_get(f"{base}/lab?token=x")
        assert status == 200
        # the Clusters REST API of our server extension is routed (whatever the answer
        # without a gateway), and the extension is enabled and loads
        status, _ = http_get(f"{base}/clusterhub/api/clusters?token=x")
        assert status != 404
        listing = ANSI.sub("", containers.exec(notebook, "jupyter", "server", "extension", "list"))
        assert re.search(r"clusterhub\.labextension\s+enabled", listing), listing
        assert re.search(r"clusterhub\.labextension\s+\S*\s*OK", listing), listing
        assert "clusterhub.labextension | extension was successfully loaded" in (
            containers.docker.logs(notebook, lines=200)
        )
        assert containers.exec(notebook, "id", "-u").strip() == str(USER_ID)
        containers.wait_healthy(notebook)


def test_the_hub_image_runs_the_hub_its_proxy_and_the_gateway(
    containers: Containers, tmp_path: Path
):
    import yaml
    from cryptography.fernet import Fernet

    from clusterhub.settings import PlatformSettings

    values = yaml.safe_load((REPO / "helm" / "clusterhub" / "values.yaml").read_text())
    data = owned_by_user(tmp_path / "data")
    ports = [free_port() for _ in range(6)]
    settings = PlatformSettings(
        data_dir="/srv/clusterhub/data",
        workshop_code="image-test-code",
        admin_password="a" * 40,
        gateway_encrypt_key=Fernet.generate_key().decode(),
        ip="127.0.0.1",
        port=ports[0],
        hub_port=ports[1],
        proxy_api_port=ports[2],
        gateway_api_port=ports[3],
        gateway_http_port=ports[4],
        gateway_tcp_port=ports[5],
    )
    for sub in ("hub", "gateway", "homes", "spaces", "logs", "run"):
        owned_by_user(data / sub)
    settings.save(str(data / "run" / "settings.json"))
    os.chown(data / "run" / "settings.json", USER_ID, USER_ID)

    # exactly the chart's command (hub.configFile); the gateway's config file must be there too
    hub = containers.run(
        "hub", HUB, "jupyterhub", "-f", values["hub"]["configFile"],
        env={"CLUSTERHUB_SETTINGS": "/srv/clusterhub/data/run/settings.json",
             "CLUSTERHUB_HEALTHCHECK_URL": f"http://127.0.0.1:{ports[1]}/hub/health"},
        volumes=(f"{data}:/srv/clusterhub/data",),
    )  # fmt: skip
    public = f"http://127.0.0.1:{ports[0]}"
    with containers.explain():
        # through configurable-http-proxy, which the hub started from the image
        wait_for(lambda: http_get(f"{public}/hub/health")[0] == 200, 180, "the hub")
        # the gateway, a hub-managed service, answers through the proxy too
        wait_for(
            lambda: http_get(f"{public}/services/dask-gateway/api/health")[0] == 200,
            120,
            "the Dask Gateway",
        )
        containers.exec(hub, "test", "-f", values["gateway"]["configFile"])
        assert containers.exec(hub, "id", "-u").strip() == str(USER_ID)
        containers.wait_healthy(hub)


def test_the_hub_image_can_be_the_charts_proxy(containers: Containers):
    """configurable-http-proxy as the chart's proxy pod runs it: as nobody, read-only root."""
    port, api = free_port(), free_port()
    containers.run(
        "proxy", HUB, "configurable-http-proxy", "--ip=127.0.0.1", f"--port={port}",
        "--api-ip=127.0.0.1", f"--api-port={api}", "--default-target=http://127.0.0.1:9",
        env={"CONFIGPROXY_AUTH_TOKEN": "secret"},
        options=("--user=65534:65534", "--read-only"),
    )  # fmt: skip

    def routes() -> bytes | None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/api/routes", headers={"Authorization": "token secret"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()

    with containers.explain():
        assert "/" in json.loads(wait_for(routes, 60, "the proxy's API"))
        assert port_open(port)


# -- metadata ---------------------------------------------------------------------------------
def test_images_run_as_user_1000_with_health_checks_within_their_size_budget(
    docker: DockerDaemon,
):
    budgets = size_budgets()
    assert set(budgets) == set(NAMES), "images/README.md must give every image a budget"
    sizes = {}
    for name in NAMES:
        config = docker.inspect(f"{PREFIX}/{name}:{TAG}")
        sizes[name] = config["Size"]
        assert config["Config"]["User"] == str(USER_ID), name
        assert config["Config"]["Healthcheck"]["Test"][0] == "CMD", name
        assert config["Config"]["Entrypoint"][:2] == ["tini", "--"], name
        assert config["Size"] <= budgets[name], (
            f"{name}: {config['Size'] / 1e9:.2f} GB > budget {budgets[name] / 1e9:.1f} GB"
        )
    assert docker.inspect(CLUSTER)["Config"]["Entrypoint"] == ["tini", "--", "clusterhub-engine"]
    # without a mode the cluster image explains itself
    usage = docker.docker("run", "--rm", "--network", "none", CLUSTER).stdout
    assert "dask-scheduler" in usage and "ipengine" in usage
    # KubeSpawner's default command
    docker.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "jupyterhub-singleuser", NOTEBOOK,
        "--help",
    )  # fmt: skip
    # the hub image's own command names a config file that exists
    command = docker.inspect(HUB)["Config"]["Cmd"]
    docker.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "test", HUB, "-f", command[-1]
    )
    print(f"\nimage build times (s): {docker.timings}")
    print("image sizes (MB): " + ", ".join(f"{n} {s // 10**6}" for n, s in sizes.items()))


def test_extra_ca_certificates_are_trusted_in_every_image(docker: DockerDaemon):
    ca_dir = extra_ca_dir()
    if ca_dir is None:
        pytest.skip("this machine has no extra CA certificates to put into the images")
    bodies = [
        "".join(ln for ln in cert.read_text().splitlines() if ln and not ln.startswith("-----"))
        for cert in sorted(ca_dir.glob("*.crt"))
    ]
    for image in (HUB, NOTEBOOK, CLUSTER):
        bundle = docker.docker(
            "run", "--rm", "--network", "none", "--entrypoint", "cat", image,
            "/etc/ssl/certs/ca-certificates.crt",
        ).stdout.replace("\n", "")  # fmt: skip
        for body in bodies:
            assert body in bundle, image
        env = docker.inspect(image)["Config"]["Env"]
        for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            assert f"{variable}=/etc/ssl/certs/ca-certificates.crt" in env, (image, variable)


def test_the_daemon_leaves_nothing_behind_when_stopped(tmp_path: Path):
    """A second, throwaway daemon with a running container: after stop() neither a process
    (dockerd, containerd, shim, container) nor a file of it remains."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    # A short root, as docker_daemon() uses: containerd's sockets live under it (104 bytes).
    daemon = DockerDaemon(cache_dir() / f"docker-t{os.getpid()}")
    try:
        daemon.start()
        with open(debootstrap_tarball(tmp_path / "debootstrap.log"), "rb") as f:
            daemon.docker("import", "-", "leftover-test:latest", stdin=f, timeout=300)
        daemon.docker("run", "-d", "--network", "none", "leftover-test:latest", "sleep", "600")
        assert processes_under(str(daemon.root))
    finally:
        daemon.stop()
    assert daemon.process.poll() is not None
    assert processes_under(str(daemon.root)) == []
    assert not daemon.root.exists()
    with open("/proc/self/mounts") as f:
        assert str(daemon.root) not in f.read()
