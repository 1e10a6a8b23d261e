"""How the local gateway stops Dask processes: a stopping cluster's at once, a scale-down's
gracefully."""

from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from dask_gateway_server.backends.db_base import JobStatus

from clusterhub.gateway.local import LocalSpaceBackend
from clusterhub.procs import process_start_time

# Says which signal asked it to stop, then stops (as a Dask process closes on SIGINT).
RECORDS_ITS_SIGNAL = """
import signal, sys, time
def stop(signum, frame):
    with open(sys.argv[1], "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(120)
"""


def started(tmp_path, name: str) -> tuple[subprocess.Popen, str]:
    record = str(tmp_path / f"{name}.signal")
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDS_ITS_SIGNAL, record], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    # Reaped as soon as it exits, as the gateway's own children are: a zombie would still
    # answer the backend's "is it gone?".
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc, record


def worker_of(
    proc: subprocess.Popen, cluster_target: JobStatus, started: float | None = None
) -> SimpleNamespace:
    """A worker whose state records ``proc`` as the gateway does: its pid and start time
    (``started``: another start time, as when the pid has been taken by another process)."""
    state = {
        "pid": proc.pid,
        "started": process_start_time(proc.pid) if started is None else started,
    }
    return SimpleNamespace(name="w1", state=state, cluster=SimpleNamespace(target=cluster_target))


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.mark.asyncio
@pytest.mark.parametrize("target", [JobStatus.STOPPED, JobStatus.FAILED])
async def test_the_workers_of_a_stopping_cluster_are_killed_at_once(tmp_path, target):
    backend = LocalSpaceBackend()
    proc, record = started(tmp_path, "worker")
    try:
        await backend.do_stop_worker(worker_of(proc, target))
        assert proc.wait(5) == -9, "killed, not asked to close"
        assert read(record) == ""
    finally:
        proc.kill()


@pytest.mark.asyncio
async def test_a_stopping_clusters_scheduler_is_killed_and_its_directory_removed(tmp_path):
    backend = LocalSpaceBackend()
    proc, record = started(tmp_path, "scheduler")
    workdir = tmp_path / "cluster"
    (workdir / "work").mkdir(parents=True)
    try:
        state = {"pid": proc.pid, "started": process_start_time(proc.pid), "workdir": str(workdir)}
        cluster = SimpleNamespace(state=state)
        await backend.do_stop_cluster(cluster)
        assert proc.wait(5) == -9 and read(record) == ""
        assert not workdir.exists()
    finally:
        proc.kill()


@pytest.mark.asyncio
async def test_a_worker_of_a_running_cluster_is_asked_to_close(tmp_path):
    """A scale-down: the cluster runs on, so its worker closes as Dask's own stop asks."""
    backend = LocalSpaceBackend()
    proc, record = started(tmp_path, "worker")
    try:
        await backend.do_stop_worker(worker_of(proc, JobStatus.RUNNING))
        assert proc.wait(5) == 0
        assert read(record) == "SIGINT"
    finally:
        proc.kill()


@pytest.mark.asyncio
async def test_stopping_what_is_already_gone_is_quiet(tmp_path):
    backend = LocalSpaceBackend()
    proc, _ = started(tmp_path, "gone")
    proc.kill()
    proc.wait()
    await backend.do_stop_worker(worker_of(proc, JobStatus.STOPPED))
    await backend.do_stop_cluster(SimpleNamespace(state={}))


@pytest.mark.asyncio
@pytest.mark.parametrize("target", [JobStatus.STOPPED, JobStatus.RUNNING])
async def test_a_process_that_took_a_dead_workers_pid_is_left_alone(tmp_path, target):
    """The machine reuses pids: a worker that died long ago may share its pid with anyone's
    process by the time the gateway stops it, or checks on it. That one is not signalled,
    and the worker counts as gone. (The control, the same pid with its own start time, is
    the tests above.)"""
    backend = LocalSpaceBackend()
    proc, record = started(tmp_path, "stranger")
    try:
        worker = worker_of(proc, target, started=process_start_time(proc.pid) - 3600)
        assert backend._check_status(worker) is False
        await backend.do_stop_worker(worker)
        await backend.do_stop_cluster(SimpleNamespace(state=dict(worker.state)))
        assert proc.poll() is None and read(record) == "", "the stranger runs on, unsignalled"
        assert backend._check_status(worker_of(proc, target)) is True
    finally:
        proc.kill()
