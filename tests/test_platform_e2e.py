"""The whole platform on one machine, driven over HTTP as attendees' browsers would.

One `clusterhub up` serves the module; the last test restarts it on the same
data dir. Every process the platform starts carries its marker, so the tests
can check the process table for leftovers.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import signal
import socket
import time

import psutil
import pytest
from hubclient import (
    BrowserUser,
    marked_processes,
    running_platform,
    space_dir,
    space_processes,
    started_user,
)
from waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(str(tmp_path_factory.mktemp("platform"))) as running:
        yield running


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # Java listens on ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


def test_every_process_of_the_platform_carries_its_marker(platform):
    """What `clusterhub up` sweeps on the way out is found by this marker, even if the hub
    itself died: the proxy and the hub's managed services must carry it too."""
    commands = " ".join(
        " ".join(p.cmdline()) for p in marked_processes("CLUSTERHUB_PLATFORM", platform.data_dir)
    )
    for part in ("jupyterhub", "configurable-http-proxy", "dask-gateway-server", "idle_culler"):
        assert part in commands, part


def test_wrong_workshop_code_is_refused(platform):
    intruder = BrowserUser(platform, "mallory", password="not-the-code")
    response = intruder.login()
    assert response.status_code == 403
    assert "Invalid username or password" in response.text
    assert platform.admin_api("GET", "/users/mallory").status_code == 404


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "gpu-monster"}, "profile: unknown profile &#39;gpu-monster&#39;"),
        (
            {"profile": "dask", "worker_cores": "99"},
            "worker_cores: must be a whole number from 1 to 2",
        ),
        ({"profile": "dask", "workers": "three"}, "workers: must be a whole number from 0 to 8"),
    ],
)
def test_bad_spawn_form_shows_the_error_and_starts_nothing(platform, options, message):
    user = BrowserUser(platform, "eve")
    user.login().raise_for_status()
    response = user.spawn(**options)
    assert response.status_code == 400
    assert message in response.text
    assert 'name="profile"' in response.text, "the form is shown again"
    assert not user.server_model()["servers"]
    assert not space_processes(platform, "eve")


@pytest.fixture(scope="module")
def alice(platform):
    return started_user(platform, "alice", profile="dask")


@pytest.fixture(scope="module")
def bob(platform):
    return started_user(platform, "bob", profile="dask")


@pytest.fixture(scope="module")
def kernels(alice, bob):
    """One kernel per user, kept open: a cluster made with new_cluster() lives as long as
    the client that made it (dask-gateway's shutdown_on_close)."""
    opened = {alice.name: alice.kernel(), bob.name: bob.kernel()}
    yield opened
    for kernel in opened.values():
        try:
            kernel.close()
        except Exception:
            pass  # the server may be stopped already


def test_workshop_content_arrives_in_the_home(platform, alice):
    home = os.path.join(platform.data_dir, "homes", "alice")
    assert os.path.isfile(os.path.join(home, "01-dask-hostnames.ipynb"))
    contents = alice.server_api("GET", "api/contents/").json()
    assert "01-dask-hostnames.ipynb" in {item["name"] for item in contents["content"]}


def test_each_user_gets_a_dask_cluster_with_no_arguments(platform, alice, bob, kernels):
    for user in (alice, bob):
        out = kernels[user.name].execute(
            "from dask_gateway import Gateway\n"
            "import socket\n"
            "gateway = Gateway()\n"
            "cluster = gateway.new_cluster()\n"
            "cluster.scale(2)\n"
            "client = cluster.get_client()\n"
            "client.wait_for_workers(2, timeout=120)\n"
            "hosts = client.gather(client.map(lambda i: socket.gethostname(), range(20)))\n"
            "print(len(hosts), len(client.scheduler_info()['workers']), cluster.name)\n"
            "print(','.join(sorted(set(hosts))), socket.gethostname())\n"
        )
        counts, names = out.strip().splitlines()
        count, workers, name = counts.split()
        assert (count, workers) == ("20", "2")
        user.cluster_name = name
        # As root each worker is a host of its own, named after it; the notebook (and the
        # machine) keep the machine's hostname.
        hosts, notebook_host = names.split()
        if os.geteuid() == 0:
            assert hosts == f"{user.name}-dask-1,{user.name}-dask-2", out
        assert notebook_host == socket.gethostname()
    assert alice.cluster_name != bob.cluster_name
    # The sidebar's view of bob's cluster names those hosts too.
    if os.geteuid() == 0:
        route = f"clusterhub/api/clusters/dask/{bob.cluster_name}/tasks"

        def hosts_seen() -> set:
            answer = bob.server_api("GET", route)
            assert answer.status_code == 200, answer.text
            return set(answer.json()["workers"].values())

        wait_for(
            lambda: hosts_seen() == {"bob-dask-1", "bob-dask-2"}, 60, "bob's workers' hostnames"
        )


def test_clusters_run_with_the_quiet_dask_settings(bob, kernels):
    from clusterhub.gateway.config import QUIET_DASK_CONFIG

    # bob's client from the first test: his scheduler and his two workers.
    out = kernels[bob.name].execute(
        "import dask, json\n"
        f"keys = {sorted(QUIET_DASK_CONFIG)!r}\n"
        "seen = {k: [client.run_on_scheduler(dask.config.get, k)]\n"
        "        + list(client.run(dask.config.get, k).values()) for k in keys}\n"
        "print(json.dumps(seen))\n"
    )
    seen = json.loads(out)
    assert seen == {key: [value] * 3 for key, value in QUIET_DASK_CONFIG.items()}


def test_a_user_cannot_see_or_connect_to_another_users_cluster(platform, alice, bob, kernels):
    kernel = kernels[bob.name]
    listed = kernel.execute("print([c.name for c in Gateway().list_clusters()])")
    assert alice.cluster_name not in listed
    assert bob.cluster_name in listed
    out = kernel.execute(
        "try:\n"
        f"    Gateway().connect({alice.cluster_name!r})\n"
        "    print('CONNECTED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__, exc)\n"
    )
    assert out.startswith("REFUSED"), out


def test_cluster_options_beyond_the_profile_are_refused_and_create_nothing(bob, kernels):
    kernel = kernels[bob.name]
    out = kernel.execute(
        "gateway = Gateway()\n"
        "before = {c.name for c in gateway.list_clusters()}\n"
        "try:\n"
        "    gateway.new_cluster(worker_cores=3)\n"
        "    print('CREATED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', exc)\n"
        "print({c.name for c in gateway.list_clusters()} == before)\n"
        "print(type(gateway).__del__.__module__)\n"
    )
    assert "REFUSED" in out and "worker_cores: must be a number from 1 to 2, not 3" in out, out
    created_nothing, closes_garbage_with = out.strip().split("\n")[-2:]
    assert created_nothing == "True", "no cluster was created"
    # The refused cluster and the previous test's refused connect left clients in cycles;
    # the kernel closes those on their own thread (tests/test_gateway_client_close.py).
    assert closes_garbage_with == "clusterhub.gateway_client_close"


def test_the_dask_workshop_notebook_runs_top_to_bottom(bob):
    outputs = bob.run_notebook("01-dask-hostnames.ipynb")
    assert "Counter(" in outputs[1], outputs


def test_the_dataframe_workshop_notebook_runs_top_to_bottom(bob):
    outputs = bob.run_notebook("04-dask-dataframe.ipynb")
    assert "mean_temperature" in outputs[2], outputs
    assert "1200000 rows made on 2 workers" in outputs[-2], outputs


def test_stopping_a_server_leaves_no_process_of_that_user(platform, alice, kernels):
    # Her gateway cluster's scheduler and workers work in her space's dask-gateway dir.
    running = []
    for proc in space_processes(platform, "alice"):
        try:
            running.append(proc.cwd())
        except psutil.Error:
            pass
    assert any(f"{os.sep}dask-gateway{os.sep}" in cwd for cwd in running), running
    commands = [" ".join(p.cmdline()) for p in space_processes(platform, "alice")]
    assert any("clusterhub-singleuser" in c for c in commands), commands
    alice.stop_server()
    deadline = time.monotonic() + 20
    while space_processes(platform, "alice") and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [" ".join(p.cmdline()) for p in space_processes(platform, "alice")]
    assert not left, left


def test_spark_profile_runs_a_job_on_the_users_standalone_workers(platform, bob, kernels):
    carol = started_user(platform, "carol", profile="dask-spark", workers=2)
    kernel = carol.kernel()
    try:
        # The workshop notebook, "Run All" in a new kernel, but for its last cell (which
        # stops the session): the checks below then use the session it made, rather than
        # paying for a second driver and two more executor JVMs.
        notebook = "02-spark-hostnames.ipynb"
        cells = carol.notebook_code(notebook)
        assert cells[-1].strip() == "spark.stop()", cells
        outputs = carol.run_cells(kernel, notebook, cells[:-1])
        assert outputs[0].strip().startswith("'spark://127.0.0.1:"), outputs
        assert "Counter(" in outputs[1], outputs
        # Each standalone worker (and so its executor) is a host of its own; whether one or
        # both ran the 4 tasks is Spark's choice.
        seen = set(re.findall(r"'([^']+)'", outputs[1]))
        assert seen and seen <= {"carol-spark-1", "carol-spark-2"}, outputs[1]

        out = kernel.execute(
            "import time\n"
            "from pyspark.sql import SparkSession\n"
            "assert SparkSession.builder.getOrCreate() is spark, 'the notebook session'\n"
            "sc = spark.sparkContext\n"
            "deadline = time.time() + 240\n"
            "while sc._jsc.sc().getExecutorMemoryStatus().size() < 3 and time.time() < deadline:\n"
            "    time.sleep(0.5)\n"
            "total = sc.parallelize(range(1000), 8).map(lambda x: x * x).sum()\n"
            "print(sc.master, total, sc._jsc.sc().getExecutorMemoryStatus().size() - 1)\n",
            timeout=300,
        )
        master, total, executors = out.split()
        from clusterhub.space import read_json

        state = read_json(os.path.join(space_dir(platform, "carol"), "spark", "state.json"))
        assert master == state["master_url"], "the kernel used carol's own master"
        assert total == str(sum(x * x for x in range(1000)))
        assert executors == "2", "one executor on each of the two standalone workers"

        # Every service of the platform listens on loopback only (the tests bind the public
        # port to 127.0.0.1 too): hub, gateway, bob's Dask cluster, carol's Spark and kernel.
        listening = set()
        for proc in marked_processes("CLUSTERHUB_PLATFORM", platform.data_dir):
            try:
                connections = proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            for conn in connections:
                if conn.status == psutil.CONN_LISTEN:
                    listening.add((conn.laddr.ip, " ".join(proc.cmdline()[:3])))
        assert listening, "the platform's processes were found"
        exposed = {entry for entry in listening if not is_loopback(entry[0])}
        assert not exposed, exposed

        carol.run_cells(kernel, notebook, cells[-1:])

        # The master dying must not take the notebook down.
        pid_dir = os.path.join(space_dir(platform, "carol"), "spark", "pids")
        master_pid_file = next(f for f in os.listdir(pid_dir) if "Master" in f)
        with open(os.path.join(pid_dir, master_pid_file)) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        time.sleep(1)
        assert kernel.execute("print(6 * 7)").strip() == "42"
        assert carol.server_model()["servers"][""]["ready"]
    finally:
        kernel.close()
    carol.stop_server()
    assert not space_processes(platform, "carol")


def test_ipyparallel_profile_maps_over_the_users_engines(platform):
    dave = started_user(platform, "dave", profile="dask-ipyparallel", workers=2)
    kernel = dave.kernel()
    try:
        out = kernel.execute(
            "import ipyparallel as ipp, socket, os\n"
            "rc = ipp.Client()\n"
            "rc.wait_for_engines(2, timeout=120, interactive=False)\n"
            "squares = rc.load_balanced_view().map_sync(lambda x: x * x, range(20))\n"
            "spaces = set(rc[:].apply_sync(lambda: __import__('os').environ['CLUSTERHUB_SPACE']))\n"
            "print(len(rc.ids), sum(squares), spaces == {os.environ['CLUSTERHUB_SPACE']})\n"
            "print(','.join(sorted(rc[:].apply_sync(socket.gethostname))), os.getuid())\n"
        )
    finally:
        kernel.close()
    counts, hosts = out.strip().splitlines()[-2:]
    assert counts.split() == ["2", str(sum(x * x for x in range(20))), "True"]
    # Each engine is a host of its own (its own UTS namespace, made as dave himself: the
    # engines are his processes), named after it.
    names, uid = hosts.split()
    assert names == "dave-ipp-1,dave-ipp-2", out
    engines = [p for p in space_processes(platform, "dave") if "ipyparallel.engine" in p.cmdline()]
    assert {p.uids().real for p in engines} == {int(uid)}, "the engines still run as dave"
    outputs = dave.run_notebook("03-ipyparallel-hostnames.ipynb")
    hostnames = ast.literal_eval(outputs[1].strip())
    assert len(hostnames) == 20, outputs
    assert set(hostnames) <= {"dave-ipp-1", "dave-ipp-2"}, outputs
    dave.stop_server()
    assert not space_processes(platform, "dave")


def test_the_worker_size_picked_on_the_form_is_the_default_of_the_users_clusters(platform):
    """2 cores and 2 GiB per worker on the spawn form: a cluster made with no arguments has
    workers of that size, and the gateway's options show it as their defaults."""
    erin = started_user(platform, "erin", profile="dask", worker_cores=2, worker_memory_gib=2)
    kernel = erin.kernel()
    try:
        out = kernel.execute(
            "from dask_gateway import Gateway\n"
            "import json\n"
            "gateway = Gateway()\n"
            "options = gateway.cluster_options()\n"
            "cluster = gateway.new_cluster()\n"
            "cluster.scale(1)\n"
            "client = cluster.get_client()\n"
            "client.wait_for_workers(1, timeout=120)\n"
            "(worker,) = client.scheduler_info()['workers'].values()\n"
            "print(json.dumps([options.worker_cores, options.worker_memory,\n"
            "                  worker['nthreads'], worker['memory_limit']]))\n"
            "cluster.shutdown()\n"
        )
    finally:
        kernel.close()
    cores, memory_gib, nthreads, memory_limit = json.loads(out.strip().splitlines()[-1])
    assert (cores, memory_gib) == (2, 2), out
    assert (nthreads, memory_limit) == (2, 2 * 2**30), out
    erin.stop_server()


def test_restart_keeps_accounts_homes_and_the_workshop_code(platform, bob):
    assert platform.stop() == 0, "".join(platform.output)
    assert "clusterhub: stopped." in "".join(platform.output)
    assert not platform.kill_leftovers(), "clusterhub up stopped everything it started"

    # Same data dir and no --workshop-code: the code of the last run is kept.
    platform.pass_workshop_code = False
    platform.start()
    assert f"workshop code: {platform.workshop_code}" in "".join(platform.output)
    users = {u["name"] for u in platform.admin_api("GET", "/users").json()}
    assert {"alice", "bob", "carol", "dave"} <= users
    home = os.path.join(platform.data_dir, "homes", "alice")
    assert os.path.isfile(os.path.join(home, "01-dask-hostnames.ipynb"))
    again = BrowserUser(platform, "bob")
    assert again.login().status_code == 200
    assert again.session.get(f"{platform.url}/hub/spawn").status_code == 200
