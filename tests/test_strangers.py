"""Strangers on one machine: two attendees with every engine, and each boundary tried from
the attacker's side (alice's real kernel) with a control that the owner may do the same.

The platform runs as root (as `./bootstrap up` runs it), so each attendee is a system account
of their own inside a control group of their own.
"""

from __future__ import annotations

import html
import json
import os
import stat
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from hubclient import (
    BrowserUser,
    ipp_engines,
    marked_processes,
    running_platform,
    space_dir,
    started_user,
)

from clusterhub import kernel_sockets
from clusterhub.fences import Fence, cgroup_version, platform_id
from clusterhub.fences import unavailable_reason as fence_unavailable
from clusterhub.space import safe_name

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.spark,
    pytest.mark.skipif(os.geteuid() != 0, reason="per-user accounts need root"),
]

PROFILES = [
    {
        "slug": "all",
        "display_name": "Everything",
        "description": "Dask, Spark and IPyParallel.",
        "default": True,
        "engines": ["spark", "ipyparallel"],
        "notebook": {"memory_gib": {"guarantee": 0.5, "limit": 1}},
        "workers": {"default": 1, "max": 4},
        "worker_cores": {"default": 1, "max": 1},
        "worker_memory_gib": {"default": 1, "max": 1},
    },
    {
        "slug": "small",
        "display_name": "Small",
        "description": "Dask only, one small worker.",
        "engines": [],
        "notebook": {"memory_gib": {"guarantee": 0.5, "limit": 1}},
        "workers": {"default": 1, "max": 1},
        "worker_cores": {"default": 1, "max": 1},
        "worker_memory_gib": {"default": 1, "max": 1},
    },
]
CONFIG = f"""
c.LocalSpaceSpawner.profiles = {PROFILES!r}
c.LocalSpaceSpawner.pids_max = 1024
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("strangers")
    config = root / "profiles.py"
    config.write_text(CONFIG)
    with running_platform(str(root), extra_args=["--config", str(config)]) as running:
        yield running
    # Stopping the platform leaves no control group either.
    if fence_unavailable() is None:
        group = f"clusterhub-{platform_id(running.data_dir)}"
        version = cgroup_version()
        places = [group] if version == 2 else [f"{c}/{group}" for c in ("memory", "cpu", "pids")]
        left = [p for p in places if os.path.exists(os.path.join("/sys/fs/cgroup", p))]
        assert not left, f"control groups left behind: {left}"
    # Nor the kernels' runtime directories.
    assert not os.path.exists(kernel_sockets.runtime_root(platform_id(running.data_dir)))


def started(platform, name: str, profile: str = "all") -> BrowserUser:
    return started_user(platform, name, timeout=240, profile=profile)


@pytest.fixture(scope="module")
def alice(platform):
    return started(platform, "alice")


@pytest.fixture(scope="module")
def bob(platform):
    return started(platform, "bob")


@pytest.fixture(scope="module")
def alice_kernel(alice):
    kernel = alice.kernel()
    yield kernel
    kernel.close()


@pytest.fixture(scope="module")
def bob_kernel(bob):
    kernel = bob.kernel()
    yield kernel
    kernel.close()


def uid_of(platform, name: str) -> int:
    state = json.load(open(os.path.join(space_dir(platform, name), "space.json")))
    return state["account"]["uid"]


def wait_engines_running(platform, name: str, timeout: float = 180) -> None:
    path = os.path.join(space_dir(platform, name), "space.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engines = json.load(open(path)).get("engines", {})
        if engines and all(state == "running" for state in engines.values()):
            return
        failed = {k: v for k, v in engines.items() if v.startswith("failed")}
        assert not failed, failed
        time.sleep(0.5)
    raise AssertionError(f"engines of {name} not running: {engines}")


def run(kernel, code: str, timeout: float = 300) -> str:
    return kernel.execute(textwrap.dedent(code), timeout=timeout)


# -- names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a" * 300, "300 characters is too long"),
        ("alice\nroot", "U+000A"),
        ("аlice", "U+0430"),  # Cyrillic: a lookalike of alice
    ],
)
def test_a_name_against_the_rule_is_refused_at_login_with_the_rule(platform, name, shown):
    before = {u["name"] for u in platform.admin_api("GET", "/users").json()}
    user = BrowserUser(platform, name)
    response = user.login()
    assert response.status_code == 400, response.status_code
    assert shown in response.text
    assert "1 to 32 characters from a-z, 0-9" in html.unescape(response.text)
    assert {u["name"] for u in platform.admin_api("GET", "/users").json()} == before


def test_a_full_width_name_is_the_same_attendee(platform, alice):
    again = BrowserUser(platform, "ＡＬＩＣＥ")
    again.login().raise_for_status()
    assert again.session.get(f"{platform.url}/hub/api/user").json()["name"] == "alice"


# -- accounts -----------------------------------------------------------------------------
def test_every_process_of_a_space_runs_as_its_own_account(platform, alice, bob, alice_kernel):
    wait_engines_running(platform, "alice")
    wait_engines_running(platform, "bob")
    out = run(
        alice_kernel,
        """
        from dask_gateway import Gateway
        gateway = Gateway()
        cluster = gateway.new_cluster()
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=120)
        print(client.submit(lambda: 6 * 7).result())
        """,
    )
    assert out.strip().endswith("42"), out
    alice_uid, bob_uid = uid_of(platform, "alice"), uid_of(platform, "bob")
    assert alice_uid != bob_uid and 0 not in (alice_uid, bob_uid)
    for name, uid in (("alice", alice_uid), ("bob", bob_uid)):
        procs = marked_processes("CLUSTERHUB_SPACE", space_dir(platform, name))
        commands = " ".join(" ".join(p.cmdline()) for p in procs)
        for part in ("clusterhub-singleuser", "ipykernel", "ipyparallel", "deploy.master"):
            if name == "bob" and part == "ipykernel":
                continue
            assert part in commands, f"{part} not among {name}'s processes"
        wrong = {p.pid: p.uids().real for p in procs if p.uids().real != uid}
        assert not wrong, f"processes of {name} not running as {uid}: {wrong}"
    # The gateway's scheduler and worker run as alice too (warm or cold).
    dask = [
        p
        for p in marked_processes("CLUSTERHUB_SPACE", space_dir(platform, "alice"))
        if "dask-gateway" in (p.cwd() or "")
    ]
    assert dask, "alice's Dask scheduler and worker were not found"
    assert {p.uids().real for p in dask} == {alice_uid}
    assert {p.uids().effective for p in dask} == {alice_uid}


def test_alice_cannot_read_bobs_files_or_the_platforms(platform, alice_kernel, bob_kernel):
    run(bob_kernel, "open('diary.txt', 'w').write('bob only')")
    bob_home = os.path.join(platform.data_dir, "homes", "bob")
    data = platform.data_dir
    targets = {
        "bob's file": os.path.join(bob_home, "diary.txt"),
        "bob's home": bob_home,
        "hub database": os.path.join(data, "hub", "jupyterhub.sqlite"),
        "cookie secret": os.path.join(data, "hub", "jupyterhub_cookie_secret"),
        "secrets.json": os.path.join(data, "secrets.json"),
        "settings": os.path.join(data, "run", "settings.json"),
        "hub log": os.path.join(data, "logs", "hub.log"),
        "gateway database": os.path.join(data, "gateway", "gateway.sqlite"),
        "bob's space": os.path.join(space_dir(platform, "bob"), "space.json"),
        "bob's spark secret": os.path.join(space_dir(platform, "bob"), "spark", "state.json"),
    }
    for what, path in targets.items():
        assert os.path.exists(path), what
    out = run(
        alice_kernel,
        f"""
        import os
        for what, path in {targets!r}.items():
            try:
                if os.path.isdir(path):
                    os.listdir(path)
                else:
                    open(path, 'rb').read(1)
                print(what, 'READ')
            except PermissionError:
                print(what, 'refused')
        open('mine.txt', 'w').write('alice')
        print('own', open('mine.txt').read())
        """,
    )
    for what in targets:
        assert f"{what} refused" in out, out
    assert "own alice" in out  # control: her own files are hers


def test_alice_cannot_signal_bobs_processes_or_the_hub(platform, alice_kernel):
    bob_pids = [p.pid for p in marked_processes("CLUSTERHUB_SPACE", space_dir(platform, "bob"))]
    hub_pid = platform.proc.pid
    out = run(
        alice_kernel,
        f"""
        import os, signal
        refused = 0
        for pid in {[*bob_pids, hub_pid]!r}:
            try:
                os.kill(pid, signal.SIGTERM)
            except PermissionError:
                refused += 1
            except ProcessLookupError:
                refused += 1
        print('refused', refused, 'of', {len(bob_pids) + 1})
        os.kill(os.getpid(), 0)
        print('own ok')
        """,
    )
    assert f"refused {len(bob_pids) + 1} of {len(bob_pids) + 1}" in out, out
    assert "own ok" in out
    assert all(psutil.pid_exists(pid) for pid in bob_pids)


CONNECTION_INFO = """
import json, ipykernel
path = ipykernel.get_connection_file()
print(json.dumps({"file": path, **json.load(open(path))}))
"""


def kernel_connection(kernel) -> dict:
    out = run(kernel, CONNECTION_INFO)
    return json.loads(out.strip().splitlines()[-1])


def test_kernels_listen_on_sockets_only_their_owner_can_open(platform, alice_kernel, bob_kernel):
    alice_info, bob_info = kernel_connection(alice_kernel), kernel_connection(bob_kernel)
    root = kernel_sockets.runtime_root(platform_id(platform.data_dir))
    for name, info in (("alice", alice_info), ("bob", bob_info)):
        assert info["transport"] == "ipc", info
        runtime = os.path.dirname(info["file"])
        assert runtime == kernel_sockets.space_runtime_dir(root, safe_name(name))
        status = os.stat(runtime)
        assert (status.st_uid, status.st_mode & 0o777) == (uid_of(platform, name), 0o700)
        # Its five channels are socket files named after the kernel: no port was chosen
        # before the kernel bound it, so no other kernel can take one in between. (ipykernel
        # still binds one loopback port of its own, for output of forked subprocesses:
        # bound at once, never chosen first.)
        channels = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        for channel in channels:
            path = f"{info['ip']}-{info[channel]}"
            assert path.startswith(runtime + "/") and stat.S_ISSOCK(os.stat(path).st_mode)
    bob_shell = f"{bob_info['ip']}-{bob_info['shell_port']}"
    alice_shell = f"{alice_info['ip']}-{alice_info['shell_port']}"
    out = run(
        alice_kernel,
        f"""
        import os, socket
        for what, path in (("bob's runtime dir", {os.path.dirname(bob_info["file"])!r}),):
            try:
                os.listdir(path)
                print(what, "LISTED")
            except PermissionError:
                print(what, "refused")
        for what, path in (("bob's shell", {bob_shell!r}), ("own shell", {alice_shell!r})):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                print(what, "connected")
            except PermissionError:
                print(what, "refused")
            finally:
                s.close()
        """,
    )
    assert "bob's runtime dir refused" in out, out
    assert "bob's shell refused" in out, out
    assert "own shell connected" in out, out  # control: her own kernel's socket opens


def test_alice_cannot_run_code_on_bobs_engines(platform, alice_kernel, bob_kernel):
    bob_space = space_dir(platform, "bob")
    spark_state = json.load(open(os.path.join(bob_space, "spark", "state.json")))
    ipp_file = os.path.join(bob_space, "ipython", "profile_default", "security")
    bob_cluster = (
        run(
            bob_kernel,
            """
        from dask_gateway import Gateway
        print(Gateway().new_cluster().name)
        """,
        )
        .strip()
        .splitlines()[-1]
    )
    out = run(
        alice_kernel,
        f"""
        import ipyparallel as ipp, os
        try:
            ipp.Client(os.path.join({ipp_file!r}, 'ipcontroller-client.json'), timeout=10)
            print('ipp JOINED')
        except (PermissionError, OSError) as exc:
            print('ipp refused', type(exc).__name__)
        from dask_gateway import Gateway
        try:
            Gateway().connect({bob_cluster!r})
            print('dask JOINED')
        except Exception as exc:
            print('dask refused', type(exc).__name__)
        # Spark: bob's master without his secret, from a process of alice's kernel (its
        # own JVM: a driver's first options become that JVM's defaults for good).
        import subprocess, sys
        intruder = '''
        import threading
        from pyspark.sql import SparkSession
        tried = {{}}
        def intrude():
            try:
                spark = (SparkSession.builder.master({spark_state["master_url"]!r})
                         .appName('intruder').config('spark.authenticate.secret', 'guess')
                         .getOrCreate())
                tried['rows'] = spark.sparkContext.parallelize(range(4), 2).collect()
            except Exception as exc:
                tried['error'] = type(exc).__name__
        thread = threading.Thread(target=intrude, daemon=True)
        thread.start()
        thread.join(30)
        print('spark RAN' if 'rows' in tried else 'spark refused', tried.get('error'), flush=True)
        import os; os._exit(0)
        '''
        import textwrap
        result = subprocess.run([sys.executable, '-c', textwrap.dedent(intruder)],
                                capture_output=True, text=True, timeout=120)
        print(result.stdout)
        """,
        timeout=240,
    )
    assert "ipp refused" in out and "dask refused" in out and "spark refused" in out, out
    with requests.get(f"{spark_state['master_webui']}/json/", timeout=10) as status:
        apps = status.json().get("activeapps", []) + status.json().get("completedapps", [])
    assert "intruder" not in {app["name"] for app in apps}
    # Control: alice's own engines run her code.
    own = run(
        alice_kernel,
        """
        import ipyparallel as ipp
        rc = ipp.Client(); rc.wait_for_engines(1, timeout=60, interactive=False)
        print('ipp', sum(rc[:].map_sync(lambda x: x, range(4))))
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        print('spark', spark.sparkContext.parallelize(range(4), 2).sum())
        spark.stop()
        """,
        timeout=240,
    )
    assert "ipp 6" in own and "spark 6" in own, own


def marked_processes_named(platform, name: str, part: str) -> list[psutil.Process]:
    return [
        p
        for p in marked_processes("CLUSTERHUB_SPACE", space_dir(platform, name))
        if part in " ".join(p.cmdline())
    ]


def test_concurrent_scaling_never_passes_the_profiles_limit(platform, alice):
    def scale(n):
        return alice.server_api(
            "PUT", "clusterhub/api/clusters/ipyparallel/default", json={"workers": n}
        )

    wait_engines_running(platform, "alice")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(scale, [3, 3, 3]))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len(ipp_engines(platform, "alice")) == 3
    too_many = alice.server_api(
        "PUT", "clusterhub/api/clusters/ipyparallel/default", json={"workers": 9}
    )
    assert too_many.status_code == 422 and "workers" in too_many.text
    assert (
        alice.server_api(
            "PUT", "clusterhub/api/clusters/ipyparallel/default", json={"workers": 0}
        ).status_code
        == 200
    )
    deadline = time.monotonic() + 15
    while marked_processes_named(platform, "alice", "ipyparallel.engine"):
        assert time.monotonic() < deadline, "engine processes left after scaling to 0"
        time.sleep(0.3)


# -- fences -------------------------------------------------------------------------------
fenced = pytest.mark.skipif(fence_unavailable() is not None, reason=str(fence_unavailable()))


def _in_background(fn) -> threading.Thread:
    def quietly() -> None:
        try:
            fn()
        except Exception:
            pass  # the kernel's connection goes with the kernel

    thread = threading.Thread(target=quietly, daemon=True)
    thread.start()
    return thread


@fenced
def test_a_memory_hog_loses_its_kernel_and_nothing_else(platform, bob_kernel):
    carol = started(platform, "carol", profile="small")  # fence: 1 + 1 x 1 GiB
    fence = Fence(platform_id(platform.data_dir), safe_name("carol"))
    (server,) = marked_processes_named(platform, "carol", "clusterhub-singleuser")
    kernel = carol.kernel()
    kernel_pid = int(run(kernel, "import os; print(os.getpid())"))
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(256 << 20))"
    _in_background(lambda: kernel.execute(hog, timeout=60))
    deadline = time.monotonic() + 60
    while psutil.pid_exists(kernel_pid) or fence.oom_kills() < 1:
        assert time.monotonic() < deadline, "the hog was not stopped by its fence"
        time.sleep(0.5)
    # Only the hog went: carol's server, bob's kernel and the hub are untouched.
    assert server.is_running()
    assert carol.server_api("GET", "api/status").ok
    assert run(bob_kernel, "print(6 * 7)").strip() == "42"
    assert requests.get(f"{platform.url}/hub/health", timeout=10).ok
    _in_background(kernel.close).join(10)


@fenced
def test_a_worker_over_the_fence_is_the_one_that_goes_and_the_gateway_replaces_it(platform):
    """Workers have no nanny on one machine: past its owner's fence a worker's task makes
    the OOM killer take the worker (its OOM score is raised), not the kernel or the server,
    and the gateway starts a new worker for the cluster."""
    erin = started(platform, "erin", profile="small")  # fence: 1 + 1 x 1 GiB
    fence = Fence(platform_id(platform.data_dir), safe_name("erin"))
    (server,) = marked_processes_named(platform, "erin", "clusterhub-singleuser")
    kernel = erin.kernel()
    try:
        out = run(
            kernel,
            """
            import os
            from dask_gateway import Gateway
            cluster = Gateway().new_cluster()
            cluster.scale(1)
            client = cluster.get_client()
            client.wait_for_workers(1, timeout=120)
            (first,) = client.scheduler_info()["workers"]
            print(first, client.run(os.getpid)[first], os.getpid())
            """,
        )
        first, worker_pid, kernel_pid = out.split()
        run(
            kernel,
            """
            def hog():
                chunks = []
                while True:
                    chunks.append(bytearray(256 << 20))
            future = client.submit(hog, pure=False)
            """,
        )
        deadline = time.monotonic() + 120
        while psutil.pid_exists(int(worker_pid)):
            assert time.monotonic() < deadline, "the worker was not stopped by its fence"
            time.sleep(0.2)
        assert fence.oom_kills() >= 1
        # The kernel (with its variables) and the server are the ones that stayed.
        alive = run(kernel, "client.cancel(future)\nprint(os.getpid(), first)").split()
        assert alive == [kernel_pid, first]
        assert server.is_running()
        out = run(
            kernel,
            """
            client.wait_for_workers(1, timeout=180)
            print(list(client.scheduler_info()["workers"]) != [first])
            print(sum(client.gather(client.map(lambda x: x + 1, range(10)))))
            cluster.shutdown()
            """,
        )
        assert out.split() == ["True", "55"], "a new worker, and it computes"
    finally:
        _in_background(kernel.close).join(10)


@fenced
def test_a_fork_bomb_stops_at_the_pids_limit(platform, bob_kernel):
    dave = started(platform, "dave", profile="small")
    kernel = dave.kernel()
    try:
        out = run(
            kernel,
            """
            import subprocess, sys
            bomb = '''
            import os, time
            made = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(3); os._exit(0)
                    made += 1
            except OSError as exc:
                print(made, exc.errno)
            '''
            import textwrap
            r = subprocess.run([sys.executable, '-c', textwrap.dedent(bomb)],
                               capture_output=True, text=True, timeout=120)
            print('bomb', r.stdout.strip())
            """,
        )
        made, errno_seen = out.split("bomb", 1)[1].split()
        assert int(made) < 1024 and int(errno_seen) == 11, out
        assert run(bob_kernel, "print(6 * 7)").strip() == "42"
    finally:
        kernel.close()
