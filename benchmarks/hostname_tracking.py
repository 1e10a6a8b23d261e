"""What recording task -> hostname costs a Dask cluster, against the same cluster without it.

    .venv/bin/python -m benchmarks.hostname_tracking [--tasks 10000] [--rounds 5]
                                                     [--window 30] [--workers 2]

One real cluster (a ``dask scheduler`` and ``dask worker`` processes on loopback) serves
both measurements:

1. throughput: a map of ``--tasks`` tiny tasks, timed with the records plugin
   (``clusterhub.engines.dask_records.TaskRecordsPlugin``) registered and without
   it, alternating for ``--rounds`` rounds; prints the median of each and their ratio
   (goal: at most 1.03).
2. idle polling: the scheduler process's CPU time over ``--window`` seconds of an idle
   cluster, with nobody asking, with the sidebar's idle polling (its tasks view at the
   slowest pace, the cluster list at its slowest pace, making the same scheduler calls as
   the Clusters API does for them), and, for scale, at the sidebar's fastest pace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil
from distributed import Client

from clusterhub.engines.dask_records import PLUGIN_NAME, TaskRecordsPlugin, collect_records
from clusterhub.labextension.dask_clusters import RECORDS_LIMIT

# The sidebar's paces (labextension/src/panel.ts: TASKS_BACKOFF, LIST_BACKOFF), in seconds.
TASKS_FAST, TASKS_IDLE = 1.0, 10.0
LIST_FAST, LIST_IDLE = 2.0, 30.0


def inc(x: int) -> int:
    return x + 1


class LocalDaskCluster:
    """A scheduler and workers as separate processes, so the scheduler's CPU is its own."""

    def __init__(self, workers: int):
        self.dir = tempfile.TemporaryDirectory(prefix="hostname-bench-")
        self.scheduler_file = os.path.join(self.dir.name, "scheduler.json")
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        self.procs: list[subprocess.Popen] = []
        self.scheduler = self._start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
            env,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.scheduler_file):
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the scheduler did not start")
            time.sleep(0.1)
        for _ in range(workers):
            self._start(
                [
                    "worker",
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--dashboard-address",
                    ":0",
                    "--memory-limit",
                    "1GiB",
                ],
                env,
            )

    def _start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        command = [sys.executable, "-m", "dask", *args[:1], "--scheduler-file"]
        command += [self.scheduler_file, *args[1:]]
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.dir.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.dir.cleanup()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def timed_map(client: Client, tasks: int, scheduler: psutil.Process) -> tuple[float, float]:
    """Wall seconds of a map of ``tasks`` tasks, and the CPU seconds the scheduler spent."""
    cpu = cpu_seconds(scheduler)
    start = time.perf_counter()
    futures = client.map(inc, range(tasks), pure=False)
    client.gather(futures)
    elapsed = time.perf_counter() - start
    del futures
    return elapsed, cpu_seconds(scheduler) - cpu


def set_recording(client: Client, on: bool) -> None:
    if on:
        client.register_plugin(TaskRecordsPlugin())
    elif PLUGIN_NAME in client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.plugins)
    ):
        client.unregister_scheduler_plugin(PLUGIN_NAME)


def throughput(
    client: Client, tasks: int, rounds: int, scheduler: psutil.Process
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(wall, scheduler CPU) seconds of each map, without and with the records plugin."""
    timed_map(client, tasks, scheduler)  # warm up: imports, connections, the first large graph
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    for number in range(rounds):
        # Alternate which goes first, so drift on the machine hits both alike.
        order = (False, True) if number % 2 == 0 else (True, False)
        for recording in order:
            set_recording(client, recording)
            (on if recording else off).append(timed_map(client, tasks, scheduler))
        print(
            f"  round {number + 1}: off {off[-1][0]:.2f} s (scheduler CPU {off[-1][1]:.2f} s), "
            f"on {on[-1][0]:.2f} s (scheduler CPU {on[-1][1]:.2f} s)",
            flush=True,
        )
    set_recording(client, False)
    return off, on


class Poller(threading.Thread):
    """Makes the scheduler calls the Clusters API makes for the sidebar, at its pace."""

    def __init__(self, client: Client, tasks_every: float, list_every: float):
        super().__init__(daemon=True)
        self.client = client
        self.tasks_every = tasks_every
        self.list_every = list_every
        self.stopped = threading.Event()
        self.calls = 0

    def run(self) -> None:
        cursor = 0
        next_tasks = next_list = time.monotonic()
        while not self.stopped.is_set():
            now = time.monotonic()
            if now >= next_tasks:  # GET clusters/dask/<name>/tasks?since=<cursor>
                answer = self.client.run_on_scheduler(
                    collect_records, since=cursor, limit=RECORDS_LIMIT
                )
                cursor = answer["cursor"] if answer else cursor
                next_tasks = now + self.tasks_every
                self.calls += 1
            if now >= next_list:  # GET clusters: the workers, cores and memory of the cluster
                self.client.scheduler_info(n_workers=-1)
                next_list = now + self.list_every
                self.calls += 1
            self.stopped.wait(max(0.01, min(next_tasks, next_list) - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def scheduler_cpu(process: psutil.Process, window: float, poller: Poller | None) -> float:
    """CPU seconds the scheduler process used over ``window`` seconds of wall time."""
    if poller is not None:
        poller.start()
    before = process.cpu_times()
    time.sleep(window)
    after = process.cpu_times()
    if poller is not None:
        poller.stop()
    return (after.user - before.user) + (after.system - before.system)


def plugin_cpu_per_task(tasks: int = 100_000) -> float:
    """CPU seconds the records plugin's hook adds per task, counted without any other noise.

    The hook is called by the scheduler on every transition; a task of a map makes these
    four, and the last but one carries what a finished-task message carries.
    """
    from collections import deque

    from clusterhub.engines.dask_records import TaskRecordsPlugin

    plugin = TaskRecordsPlugin()
    plugin.records, plugin.sequence = deque(maxlen=plugin.capacity), 0  # what start() makes
    startstops = ({"action": "compute", "start": 1.0, "stop": 1.001},)
    finished = {"worker": "tls://10.0.0.7:40123", "startstops": startstops, "nbytes": 28}
    hops = [
        ("released", "waiting", {}),
        ("waiting", "processing", {}),
        ("processing", "memory", finished),
        ("memory", "released", {}),
    ]
    keys = [f"inc-{i}" for i in range(tasks)]
    began = time.process_time()
    for key in keys:
        for start, finish, extra in hops:
            plugin.transition(key, start, finish, stimulus_id="task-finished-1", **extra)
    return (time.process_time() - began) / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per map (10000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed maps of each kind (5)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per CPU window (30)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    args = parser.parse_args()

    cluster = LocalDaskCluster(args.workers)
    try:
        client = Client(scheduler_file=cluster.scheduler_file, timeout=60)
        client.wait_for_workers(args.workers, timeout=60)
        print(
            f"cluster: 1 scheduler, {args.workers} workers x 1 thread; "
            f"{os.cpu_count()} cores on this machine"
        )

        process = psutil.Process(cluster.scheduler.pid)
        print(f"\n1. throughput of a {args.tasks}-task map, records plugin off vs on")
        off, on = throughput(client, args.tasks, args.rounds, process)
        for what, index, unit in (("wall time", 0, "s"), ("scheduler CPU", 1, "CPU s")):
            off_median = statistics.median(run[index] for run in off)
            on_median = statistics.median(run[index] for run in on)
            ratio = on_median / off_median
            best = min(run[index] for run in on) / min(run[index] for run in off)
            print(
                f"  {what}: median off {off_median:.3f} {unit} "
                f"({args.tasks / off_median:.0f} tasks/{unit}), on {on_median:.3f} {unit}; "
                f"ratio on/off {ratio:.3f} (overhead {100 * (ratio - 1):+.1f} %, goal <= +3 %), "
                f"best-of ratio {best:.3f}"
            )
        print(
            "  (wall time carries every other load of the machine; the scheduler's own CPU "
            "time is where the plugin runs)"
        )
        per_task = statistics.median(run[1] for run in off) / args.tasks
        hook = plugin_cpu_per_task()
        print(
            f"  the plugin's hook alone: {hook * 1e6:.2f} CPU us per task, against "
            f"{per_task * 1e6:.0f} CPU us the scheduler spends per task: overhead "
            f"{100 * hook / per_task:+.2f} % (goal <= +3 %; no other load counted in it)"
        )

        print(f"\n2. scheduler CPU over {args.window:.0f} s of an idle cluster")
        set_recording(client, True)  # as after the sidebar first looked at the cluster
        idle = scheduler_cpu(process, args.window, None)
        slow = Poller(client, TASKS_IDLE, LIST_IDLE)
        polled = scheduler_cpu(process, args.window, slow)
        fast = Poller(client, TASKS_FAST, LIST_FAST)
        busy = scheduler_cpu(process, args.window, fast)
        idle_again = scheduler_cpu(process, args.window, None)
        baseline = (idle + idle_again) / 2
        per_minute = 60 / args.window
        print(
            f"  nobody polling:              {idle * per_minute:.3f} / "
            f"{idle_again * per_minute:.3f} CPU s per minute (before / after)"
        )
        print(
            f"  sidebar idle pace ({TASKS_IDLE:.0f} s / {LIST_IDLE:.0f} s, {slow.calls} calls): "
            f"{polled * per_minute:.3f} CPU s per minute, ratio {polled / baseline:.3f} "
            f"to no polling ({100 * (polled - baseline) / args.window:+.2f} % of a core)"
        )
        print(
            f"  sidebar fastest pace ({TASKS_FAST:.0f} s / {LIST_FAST:.0f} s, {fast.calls} calls):"
            f" {busy * per_minute:.3f} CPU s per minute, ratio {busy / baseline:.3f} "
            f"({100 * (busy - baseline) / args.window:+.2f} % of a core)"
        )
        print(
            f"  the two idle windows differ by {100 * abs(idle - idle_again) / args.window:.2f} "
            "% of a core: the noise floor"
        )
        client.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
