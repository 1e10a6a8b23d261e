"""Benchmarks of the local platform, each a ratio against a baseline measured in the same run.

    python -m benchmarks.local_platform spawn   [--users 5]
    python -m benchmarks.local_platform cluster [--repeat 5]
    python -m benchmarks.local_platform surge   [--users 20]
    python -m benchmarks.local_platform accounts [--users 5] [--repeat 5]
    python -m benchmarks.local_platform capacity [--users 30]
    python -m benchmarks.local_platform all

spawn:   spawn-to-ready of LocalSpaceSpawner vs JupyterHub's SimpleLocalProcessSpawner,
         on the same hub config (goal: ratio <= 1.1).
cluster: new_cluster + 2 workers joined, through our gateway vs dask-gateway-server's own
         UnsafeLocalBackend configured by hand (goal: ratio <= 1.2 and < 3 s). Each
         repeat starts 10 s after the previous cluster was shut down, on a settled machine.
surge:   N users log in through the form at once; users ready per minute, ours vs plain
         JupyterHub + SimpleLocalProcessSpawner (goal: ratio >= 0.9, no failures).
accounts: as root, the per-attendee accounts and fences against --single-account on the same
         machine: spawn-to-ready (goal: ratio <= 1.1) and Dask cluster ready, new_cluster +
         2 workers (goal: ratio <= 1.2); also the memory each profile's fence gives.
capacity: N attendees arrive at once, each a server, a 2-worker cluster and a 20-task map
         (see benchmarks/capacity.py), on plain JupyterHub + SimpleLocalProcessSpawner with
         LocalCluster in the kernel (timeouts raised so it can finish), then on ours: failures
         and causes, server/cluster ready p50/p95, CPU-s and USS MB per attendee, stop time.
         Goals at 30: no failures, CPU per attendee at most half of before, cluster-ready
         p95 <= 2 x p50, <= 300 MB per attendee, stop within 20 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.hubclient import BrowserUser, RunningPlatform, free_port, running_platform

PLAIN_CONFIG = """
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r} + "/{{username}}"
c.SimpleLocalProcessSpawner.args = ["--ServerApp.allow_root=True"]
"""

# A room arriving at once needs minutes, not JupyterHub's 60 s start and 30 s HTTP timeouts.
PATIENT_PLAIN_CONFIG = """
c.Spawner.start_timeout = 1800
c.Spawner.http_timeout = 1800
"""


@contextmanager
def platform(
    root: str, plain: bool = False, extra: tuple[str, ...] = (), plain_extra: str = ""
) -> Iterator[RunningPlatform]:
    """A running platform; stopped, its accounts and data removed, at the end."""
    extra_args = list(extra)
    if plain:
        config = os.path.join(root, "plain_config.py")
        os.makedirs(root, exist_ok=True)
        with open(config, "w") as f:
            f.write(PLAIN_CONFIG.format(homes=os.path.join(root, "plain-homes")) + plain_extra)
        extra_args += ["--config", config]
    with running_platform(root, extra_args=extra_args) as running:
        yield running


def admin_spawn_and_wait(running: RunningPlatform, name: str, options: dict | None) -> float:
    """Spawn through the REST API as an admin would; seconds until the hub reports ready."""
    running.admin_api("POST", f"/users/{name}")
    start = time.perf_counter()
    response = running.admin_api("POST", f"/users/{name}/server", json=options or {})
    if response.status_code not in (201, 202):
        raise RuntimeError(f"spawn of {name}: {response.status_code} {response.text}")
    user = BrowserUser(running, name)
    deadline = time.monotonic() + 180
    while not user.server_model().get("servers", {}).get("", {}).get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready")
        time.sleep(0.05)
    return time.perf_counter() - start


def bench_spawn(users: int) -> None:
    results = {}
    for label, plain in (("plain", True), ("clusterhub", False)):
        with tempfile.TemporaryDirectory() as root, platform(root, plain) as running:
            options = None if plain else {"profile": "dask"}
            times = [admin_spawn_and_wait(running, f"{label}{i}", options) for i in range(users)]
        results[label] = statistics.median(times)
        print(f"spawn-to-ready {label:10s}: median {results[label]:.2f} s over {users} users")
    print(f"spawn-to-ready ratio clusterhub/plain: {results['clusterhub'] / results['plain']:.2f}")


CLUSTER_CODE = """
import sys, time
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth, JupyterHubAuth
address, proxy, kind, secret, repeat, settle = sys.argv[1:7]
auth = JupyterHubAuth(api_token=secret) if kind == "hub" else BasicAuth("bench", secret)
gateway = Gateway(address=address, proxy_address=proxy, auth=auth)
times = []
for _ in range(int(repeat)):
    start = time.perf_counter()
    cluster = gateway.new_cluster()
    cluster.scale(2)
    client = cluster.get_client()
    client.wait_for_workers(2, timeout=120)
    times.append(time.perf_counter() - start)
    client.close()
    cluster.shutdown()
    # dask-gateway 2026.3 closes a cluster's Gateway again from __del__, which deadlocks
    # when the collector runs on the loop thread (see clusterhub.labextension.dask_clusters).
    cluster.gateway.__dict__.pop("_loop_runner", None)
    # Let the machine settle (the old cluster stopping): each repeat measures one user's
    # cluster on a machine at rest, not the previous teardown.
    time.sleep(float(settle))
print(" ".join(f"{t:.3f}" for t in times))
"""

BASELINE_GATEWAY_CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{http}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = "bench-password"
c.ClusterConfig.scheduler_cmd = {scheduler!r}
c.ClusterConfig.worker_cmd = {worker!r}
c.ClusterConfig.scheduler_memory = "512 M"
"""


def _time_clusters(address: str, proxy: str, kind: str, secret: str, repeat: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", CLUSTER_CODE, address, proxy, kind, secret, str(repeat), "10"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    return [float(t) for t in out.stdout.split()]


def bench_cluster(repeat: int) -> None:
    from clusterhub.gateway.config import dask_command

    with tempfile.TemporaryDirectory() as root:
        api, http, tcp = free_port(), free_port(), free_port()
        config = os.path.join(root, "gateway_config.py")
        with open(config, "w") as f:
            f.write(
                BASELINE_GATEWAY_CONFIG.format(
                    api=api,
                    http=http,
                    tcp=tcp,
                    scheduler=dask_command("scheduler"),
                    worker=dask_command("worker"),
                )
            )
        server = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "dask-gateway-server"), "-f", config],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            from clusterhub.ports import wait_for_port

            wait_for_port("127.0.0.1", http, 60)
            baseline = _time_clusters(
                f"http://127.0.0.1:{http}",
                f"gateway://127.0.0.1:{tcp}",
                "basic",
                "bench-password",
                repeat,
            )
        finally:
            server.terminate()
            server.wait(30)

    with tempfile.TemporaryDirectory() as root, platform(root) as running:
        ours = _time_our_clusters(running, "bench", repeat)
    b, o = statistics.median(baseline), statistics.median(ours)
    print(f"cluster ready (new_cluster + 2 workers) dask-gateway local backend: median {b:.2f} s")
    print(f"cluster ready (new_cluster + 2 workers) clusterhub:                 median {o:.2f} s")
    print(f"cluster ready ratio clusterhub/baseline: {o / b:.2f}")


def _time_our_clusters(running: RunningPlatform, name: str, repeat: int) -> list[float]:
    """Cluster-ready times through the platform's gateway, as ``name`` (spawned first)."""
    from clusterhub.settings import PlatformSettings

    admin_spawn_and_wait(running, name, {"profile": "dask"})
    token = running.admin_api(
        "POST",
        f"/users/{name}/tokens",
        json={"scopes": ["access:services!service=dask-gateway"], "expires_in": 3600},
    ).json()["token"]
    settings = PlatformSettings.load(os.path.join(running.data_dir, "run", "settings.json"))
    proxy = settings.gateway_proxy_address
    return _time_clusters(settings.gateway_url, proxy, "hub", token, repeat)


def bench_accounts(users: int, repeat: int) -> None:
    if os.geteuid() != 0:
        print("accounts: skipped, the per-attendee accounts exist only when run as root")
        return
    from clusterhub.profiles import DEFAULT_PROFILES, memory_budget_gib, validate_profiles

    spawn, cluster = {}, {}
    for label, extra in (("single-account", ("--single-account",)), ("per-user", ())):
        with tempfile.TemporaryDirectory() as root, platform(root, extra=extra) as running:
            options = {"profile": "dask"}
            times = [admin_spawn_and_wait(running, f"u{i}", options) for i in range(users)]
            spawn[label] = statistics.median(times)
            cluster[label] = statistics.median(_time_our_clusters(running, "bench", repeat))
        print(f"spawn-to-ready {label:15s}: median {spawn[label]:.2f} s over {users} users")
        print(f"cluster ready  {label:15s}: median {cluster[label]:.2f} s over {repeat} clusters")
    print(f"spawn-to-ready ratio per-user/single-account: "
          f"{spawn['per-user'] / spawn['single-account']:.2f}")  # fmt: skip
    print(f"cluster ready ratio per-user/single-account: "
          f"{cluster['per-user'] / cluster['single-account']:.2f}")  # fmt: skip
    for profile in validate_profiles(DEFAULT_PROFILES):
        budget = memory_budget_gib(profile)
        print(f"fence memory of profile {profile['slug']!r}: {budget:g} GiB")


def _surge(running: RunningPlatform, users: int, plain: bool) -> tuple[float, int]:
    def one(i: int) -> bool:
        user = BrowserUser(running, f"attendee{i}")
        try:
            response = user.login()
            if response.status_code != 200:
                return False
            if not plain:
                if user.spawn(profile="dask").status_code != 302:
                    return False
            user.wait_ready(timeout=600)
            return True
        except Exception as exc:  # a failure is counted, not fatal to the benchmark
            print(f"  attendee{i} failed: {exc}")
            return False

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        ok = sum(pool.map(one, range(users)))
    return time.perf_counter() - start, users - ok


def bench_surge(users: int) -> None:
    rates = {}
    for label, plain in (("plain", True), ("clusterhub", False)):
        with tempfile.TemporaryDirectory() as root, platform(root, plain) as running:
            seconds, failures = _surge(running, users, plain)
        rates[label] = (users - failures) / seconds * 60
        print(
            f"surge {label:10s}: {users} users in {seconds:.1f} s, {failures} failed, "
            f"{rates[label]:.1f} users ready per minute"
        )
    print(
        f"surge ratio clusterhub/plain (users ready per minute): "
        f"{rates['clusterhub'] / rates['plain']:.2f}"
    )


def bench_capacity(users: int, only: str = "", keep_logs: str = "") -> None:
    from benchmarks.capacity import compare, room

    rooms = []
    for label, plain in (("plain", True), ("clusterhub", False)):
        if only and label != only:
            continue
        with tempfile.TemporaryDirectory() as root:
            with platform(root, plain, plain_extra=PATIENT_PLAIN_CONFIG) as running:
                rooms.append(room(running, users, plain, label))
                # Stopped and timed by room(); the context only checks nothing is left.
                if keep_logs:
                    logs = os.path.join(running.data_dir, "logs")
                    shutil.copytree(logs, os.path.join(keep_logs, label), dirs_exist_ok=True)
        time.sleep(10)  # let the machine settle between the two rooms
    compare(rooms)


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    benches = ["spawn", "cluster", "surge", "accounts", "capacity", "all"]
    parser.add_argument("which", choices=benches)
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--only",
        choices=["plain", "clusterhub"],
        default="",
        help="capacity: measure one room only (e.g. ours on an older commit)",
    )
    parser.add_argument(
        "--keep-logs",
        metavar="DIR",
        default="",
        help="capacity: copy each room's platform logs into DIR/<room> after its stop",
    )
    args = parser.parse_args()
    if args.which in ("spawn", "all"):
        bench_spawn(args.users or 5)
    if args.which in ("cluster", "all"):
        bench_cluster(args.repeat)
    if args.which in ("surge", "all"):
        bench_surge(args.users or 20)
    if args.which in ("accounts", "all"):
        bench_accounts(args.users or 5, args.repeat)
    if args.which in ("capacity", "all"):
        bench_capacity(args.users or 30, args.only, args.keep_logs)


if __name__ == "__main__":
    main()
