"""A room arriving at once: N attendees, each a server, a Dask cluster of 2 workers, a map.

Each attendee, in a thread of their own and all at once:

1. logs in through the form and submits the spawn form (ours: the ``dask`` profile; the plain
   hub has no form), then waits on the spawn-pending page's progress stream, as a browser
   does, until the server is ready (``server ready``, from the login);
2. opens a kernel over its websocket, as JupyterLab does, and in it starts a cluster of 2
   workers (ours: ``Gateway().new_cluster()``; the plain hub: ``LocalCluster``, what an
   attendee of a plain hub would run), waits for both workers and maps 20 tasks
   (``cluster ready`` is measured in the kernel, from asking for the cluster to both workers
   joined). The kernel is kept, as an attendee keeps their notebook open.

No client-side timeout is shorter than 30 minutes: an attendee who waits is not a failure.
Then, with every kernel and cluster still running, the USS of the platform's whole process
tree is taken, and the platform is stopped with SIGTERM, timed until its last process is gone.

CPU-seconds are the machine's busy time (``/proc/stat``) from the first login to the last
map: everything the platform did for the room, plus this script's small HTTP clients.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil

from tests.hubclient import BrowserUser, Kernel, RunningPlatform

OUR_CLUSTER_CODE = """
import time as _t
from dask_gateway import Gateway
_start = _t.perf_counter()
cluster = Gateway().new_cluster()
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2)
_ready = _t.perf_counter() - _start
_results = client.gather(client.map(lambda x: x + 1, range(20)))
print("cluster-ready", _ready, "results", len(_results))
"""

PLAIN_CLUSTER_CODE = """
import time as _t
from dask.distributed import Client, LocalCluster
_start = _t.perf_counter()
cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
client = Client(cluster)
client.wait_for_workers(2)
_ready = _t.perf_counter() - _start
_results = client.gather(client.map(lambda x: x + 1, range(20)))
print("cluster-ready", _ready, "results", len(_results))
"""

PATIENCE = 1800.0  # seconds an attendee waits for anything before giving up


@dataclass
class Attendee:
    name: str
    server_ready: float | None = None
    cluster_ready: float | None = None
    failure: str = ""
    kernel: Kernel | None = field(default=None, repr=False)


def busy_cpu_seconds() -> float:
    """The machine's CPU time spent outside idle and iowait, in seconds, since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# What each process of the platform is, from its command line (first match wins).
PROCESS_KINDS = (
    ("clusterhub-singleuser", "notebook servers"),
    ("jupyterhub-singleuser", "notebook servers"),
    ("ipykernel", "kernels"),
    ("clusterhub.forkserver", "dask fork server"),
    ("multiprocessing.spawn", "dask workers spawned"),
    ("dask scheduler", "dask schedulers (cold)"),
    ("dask worker", "dask workers (cold)"),
    ("dask-gateway-proxy", "gateway proxy"),
    ("dask-gateway-server", "gateway"),
    ("configurable-http-proxy", "http proxy"),
    ("jupyterhub_idle_culler", "culler"),
    ("clusterhub.cli", "clusterhub up"),
    ("jupyterhub", "hub"),
)


# A process forked by a fork server shows its parent's command line.
FORKED_KINDS = {"dask fork server": "dask schedulers and workers (forked)"}


def _kind(proc: psutil.Process) -> str:
    cmdline = " ".join(proc.cmdline())
    kind = next((k for part, k in PROCESS_KINDS if part in cmdline), "other")
    if kind in FORKED_KINDS and " ".join(proc.parent().cmdline()) == cmdline:
        return FORKED_KINDS[kind]
    return kind


def _by_kind(pid: int):
    """(kind, process) for ``pid`` and each of its live descendants."""
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            kind = _kind(proc)
        except (psutil.Error, AttributeError):  # gone, or its parent is
            continue
        yield kind, proc


def cpu_by_kind(pid: int) -> dict[str, float]:
    """CPU-seconds of the live processes under ``pid``, by what they are. What exited (a
    worker killed and started again, a short-lived helper) is not here: the difference to
    the machine's busy time is reported as such."""
    found: dict[str, float] = {}
    for kind, proc in _by_kind(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        found[kind] = found.get(kind, 0.0) + times.user + times.system
    return found


def uss_by_kind(pid: int) -> dict[str, float]:
    """Unique memory (MB) of ``pid`` and all its live descendants, by what they are."""
    found: dict[str, float] = {}
    for kind, proc in _by_kind(pid):
        try:
            uss = proc.memory_full_info().uss
        except psutil.Error:
            continue
        found[kind] = found.get(kind, 0.0) + uss / 1e6
    return found


def wait_ready_as_a_browser(user: BrowserUser) -> None:
    """Follow the spawn-pending page's event stream until the server is ready (or failed)."""
    url = f"{user.base}/hub/api/users/{user.name}/server/progress"
    headers = {"X-XSRFToken": user.xsrf("/hub/")}
    deadline = time.monotonic() + PATIENCE
    not_started_until = time.monotonic() + 60
    while time.monotonic() < deadline:
        with user.session.get(url, headers=headers, stream=True, timeout=PATIENCE) as stream:
            # 404/400: the spawn has not begun yet (or it failed before: then give up soon).
            if stream.status_code in (400, 404) and time.monotonic() < not_started_until:
                time.sleep(1)
                continue
            stream.raise_for_status()
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:") :])
                if event.get("ready"):
                    user.session.get(f"{user.base}/user/{user.name}/lab").raise_for_status()
                    return
                if event.get("failed"):
                    raise RuntimeError(f"spawn failed: {event.get('message')}")
    raise RuntimeError(f"server not ready in {PATIENCE:.0f} s")


def arrive(running: RunningPlatform, attendee: Attendee, plain: bool) -> None:
    start = time.perf_counter()
    user = BrowserUser(running, attendee.name)
    try:
        response = user.login()
        response.raise_for_status()
        if not plain:
            spawned = user.spawn(profile="dask")
            if spawned.status_code != 302:
                raise RuntimeError(f"spawn form answered {spawned.status_code}")
        wait_ready_as_a_browser(user)
        attendee.server_ready = time.perf_counter() - start
        attendee.kernel = user.kernel()
        out = attendee.kernel.execute(PLAIN_CLUSTER_CODE if plain else OUR_CLUSTER_CODE, PATIENCE)
        words = out.split()
        if "cluster-ready" not in words or words[-1] != "20":
            raise RuntimeError(f"unexpected output: {out.strip()[:200]}")
        attendee.cluster_ready = float(words[words.index("cluster-ready") + 1])
    except Exception as exc:  # counted with its cause: the benchmark goes on
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        attendee.failure = f"{type(exc).__name__}: {lines[-1][:300]}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class RoomResult:
    label: str
    attendees: list[Attendee]
    cpu_seconds: float
    uss_mb: float
    stop_seconds: float
    leftovers: list[str]
    cpu_kinds: dict[str, float] = field(default_factory=dict)
    uss_kinds: dict[str, float] = field(default_factory=dict)

    def report(self) -> list[str]:
        n = len(self.attendees)
        servers = [a.server_ready for a in self.attendees if a.server_ready is not None]
        clusters = [a.cluster_ready for a in self.attendees if a.cluster_ready is not None]
        failures = [a for a in self.attendees if a.failure]
        server_p = f"p50 {percentile(servers, 50):6.1f} s  p95 {percentile(servers, 95):6.1f} s"
        cluster_p = f"p50 {percentile(clusters, 50):6.1f} s  p95 {percentile(clusters, 95):6.1f} s"
        lines = [
            f"{self.label}: {n} attendees, {len(failures)} failed",
            f"  server ready  {server_p}  ({len(servers)}/{n})",
            f"  cluster ready {cluster_p}  ({len(clusters)}/{n})",
            f"  CPU per attendee {self.cpu_seconds / n:6.1f} s,"
            f" USS per attendee {self.uss_mb / n:6.0f} MB",
            f"  stop (SIGTERM to last process gone) {self.stop_seconds:5.1f} s,"
            f" {len(self.leftovers)} processes left",
        ]
        causes: dict[str, int] = {}
        for a in failures:
            causes[a.failure] = causes.get(a.failure, 0) + 1
        lines += [f"  failure x{count}: {cause}" for cause, count in causes.items()]
        if self.cpu_kinds:
            lines.append("  CPU-seconds per attendee, by process (live at the end):")
            for kind, seconds in sorted(self.cpu_kinds.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {seconds / n:6.2f}  {kind}")
            gone = self.cpu_seconds - sum(self.cpu_kinds.values())
            lines.append(f"    {gone / n:6.2f}  exited processes, the benchmark's clients, rest")
        if self.uss_kinds:
            lines.append("  USS MB per attendee, by process:")
            for kind, mb in sorted(self.uss_kinds.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {mb / n:6.1f}  {kind}")
        return lines


def room(running: RunningPlatform, users: int, plain: bool, label: str) -> RoomResult:
    """Let ``users`` attendees arrive at once on a started platform; stop it; measure."""
    attendees = [Attendee(f"attendee{i}") for i in range(users)]
    assert running.proc is not None
    kinds_before = cpu_by_kind(running.proc.pid)  # the platform's own start is not the room's
    cpu_before = busy_cpu_seconds()
    with ThreadPoolExecutor(max_workers=users) as pool:
        list(pool.map(lambda a: arrive(running, a, plain), attendees))
    cpu = busy_cpu_seconds() - cpu_before
    uss_kinds = uss_by_kind(running.proc.pid)
    uss = sum(uss_kinds.values())  # one reading of the tree: the total is its sum
    kinds = cpu_by_kind(running.proc.pid)
    for kind, seconds in kinds_before.items():
        kinds[kind] = kinds.get(kind, 0.0) - seconds
    stop_seconds, leftovers = timed_stop(running)
    for attendee in attendees:
        if attendee.kernel is not None:
            attendee.kernel._closed.set()  # its server is gone with the platform
    return RoomResult(label, attendees, cpu, uss, stop_seconds, leftovers, kinds, uss_kinds)


def timed_stop(running: RunningPlatform) -> tuple[float, list[str]]:
    """SIGTERM the platform; seconds until none of its processes is left, and any left."""
    start = time.perf_counter()
    running.stop(timeout=300)
    while time.perf_counter() - start < 300 and running_processes(running):
        time.sleep(0.1)
    return time.perf_counter() - start, running.kill_leftovers()


def running_processes(running: RunningPlatform) -> bool:
    from hubclient import marked_processes

    return bool(marked_processes("CLUSTERHUB_PLATFORM", running.data_dir))


def compare(rooms: list[RoomResult], print_line: Callable[[str], None] = print) -> None:
    for result in rooms:
        for line in result.report():
            print_line(line)
    if len(rooms) == 2:
        plain, ours = rooms
        n = len(ours.attendees)
        ratio = (ours.cpu_seconds / n) / max(plain.cpu_seconds / len(plain.attendees), 1e-9)
        print_line(f"CPU per attendee ratio {ours.label}/{plain.label}: {ratio:.2f}")
