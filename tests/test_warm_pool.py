"""Warm interpreters become real Dask schedulers and workers with the assigned environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from distributed import Client

from clusterhub import procs
from clusterhub.gateway.warm_pool import (
    WARM_INTERPRETER_BYTES,
    WARM_PER_CLUSTER,
    WarmInterpreterPool,
    fingerprint,
    prewarm_plan,
)

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def job_env(space_root: str, **extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "PYTHONPATH") if k in os.environ}
    # TMPDIR as the gateway gives it: Dask's scratch space stays inside the space.
    env.update({procs.SPACE_MARKER: space_root, "HOME": space_root, "TMPDIR": space_root})
    env.update(extra)
    return env


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


async def wait_for_text(path: str, text: str, timeout: float = 60) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        content = await asyncio.to_thread(read_text, path)
        if text in content:
            return content
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


def stop_all(pids: list[int]) -> None:
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            alive.extend([*proc.children(recursive=True), proc])
        except psutil.Error:
            pass
    for proc in alive:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=15)
    for proc in left:
        proc.kill()


def test_only_dask_commands_of_an_environment_are_fingerprinted():
    env = {"PYTHONPATH": "/somewhere"}
    assert fingerprint([DASK, "worker", "tcp://x:1"], env) == (
        os.path.join(os.path.dirname(DASK), "python"),
        ("/somewhere", "", "", "", ""),
    )
    assert fingerprint([DASK, "scheduler"], {}) != fingerprint([DASK, "scheduler"], env)
    assert fingerprint([DASK, "cluster"], env) is None
    assert fingerprint(["/bin/sleep", "10"], env) is None
    assert fingerprint(["dask", "worker"], env) is None, "a relative path names no environment"


@pytest.mark.skipif(os.geteuid() != 0, reason="warm interpreters import as root only as root")
def test_as_root_an_environment_built_from_a_repository_is_never_imported_warm(tmp_path):
    built = tmp_path / "build-1" / "venv" / "bin"
    built.mkdir(parents=True)
    (built / "python").symlink_to(sys.executable)
    (built / "dask").write_text(f"#!{built / 'python'}\n")
    assert fingerprint([str(built / "dask"), "worker", "tcp://x:1"], {}) is None
    assert fingerprint([DASK, "worker", "tcp://x:1"], {}) is not None, "the platform's own"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A data dir short enough for a fork server's socket (pytest's own directories, deeper
    still under xdist, are not: see the test below)."""
    path = tempfile.mkdtemp(prefix="warm-")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_warm_interpreters_become_scheduler_and_workers(short_dir):
    tmp_path = short_dir
    space = tmp_path / "spaces" / "ada"
    cluster_dir = space / "dask-gateway" / "c1"
    cluster_dir.mkdir(parents=True)
    pool = WarmInterpreterPool(2, str(tmp_path), refill_delay=0.2)
    env = job_env(
        str(space),
        CLUSTERHUB_JOB_VALUE="from-the-assignment",
        # Dask config arrives with the assignment, after the interpreter imported Dask.
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="7",
    )
    scheduler_cmd = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0"]
    scheduler_cmd += ["--dashboard-address", "127.0.0.1:0"]
    pids: list[int] = []
    try:
        await pool.warm(scheduler_cmd, env)
        assert len(pool._idle) == 2
        scheduler_log = str(cluster_dir / "scheduler.log")
        pid = await pool.start(scheduler_cmd, env, str(cluster_dir), scheduler_log)
        assert pid is not None
        pids.append(pid)
        log = await wait_for_text(scheduler_log, "Scheduler at:")
        address = log.split("Scheduler at:")[1].split()[0]

        worker_cmd = [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1"]
        worker_cmd += ["--dashboard-address", "127.0.0.1:0", "--memory-limit", "1GiB"]
        worker_log = str(cluster_dir / "worker.log")
        worker_pid = await pool.start(worker_cmd, env, str(cluster_dir), worker_log)
        assert worker_pid is not None and worker_pid != pid
        pids.append(worker_pid)

        async with Client(address, asynchronous=True, timeout=60) as client:
            await client.wait_for_workers(1, timeout=60)

            def look() -> dict:
                import os

                import dask

                return {
                    "pid": os.getpid(),
                    "hash": hash("dask"),
                    "value": os.environ.get("CLUSTERHUB_JOB_VALUE"),
                    "home": os.environ.get("HOME"),
                    "cwd": os.getcwd(),
                    "failures": dask.config.get("distributed.scheduler.allowed-failures"),
                }

            on_scheduler = await client.run_on_scheduler(look)
            (on_worker,) = (await client.run(look)).values()
        for seen in (on_scheduler, on_worker):
            assert seen["value"] == "from-the-assignment"
            assert seen["home"] == str(space)
            assert seen["cwd"] == str(cluster_dir)
        assert int(on_scheduler["failures"]) == 7
        # The worker forked from the warm fork server (not spawned by its nanny), with the
        # hash seed every Dask worker uses.
        assert psutil.Process(on_worker["pid"]).ppid() != worker_pid
        seeded = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "print(hash('dask'))",
            env={**os.environ, "PYTHONHASHSEED": "6640"},
            stdout=asyncio.subprocess.PIPE,
        )
        assert on_worker["hash"] == int((await seeded.communicate())[0])
        # The memory limit is enforced by the nanny, which is the warm interpreter itself.
        assert "Memory:                   1.00 GiB" in await wait_for_text(worker_log, "Memory:")

        # The kernel still shows the warm interpreters' starting environment, without the
        # space's marker; their working directory tells whose they are.
        found = {p.pid for p in procs.find_marked(procs.SPACE_MARKER, str(space), str(space))}
        assert {pid, worker_pid} <= found
        assert pid not in {p.pid for p in procs.find_marked(procs.SPACE_MARKER, str(space))}
        assert procs.sweep(procs.SPACE_MARKER, str(space), cwd_under=str(space)) >= 2
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        await asyncio.wait_for(pool._refill, 90)  # once the machine is quiet (60 s at most)
        assert len(pool._idle) == 2, "the pool refilled"
    finally:
        await pool.close()
        stop_all(pids)
    assert pool._idle == []


@pytest.mark.slow
@pytest.mark.asyncio
async def test_another_environment_starts_cold_and_retargets(short_dir):
    tmp_path = short_dir
    pool = WarmInterpreterPool(1, str(tmp_path), refill_delay=0.2)
    cmd = [DASK, "scheduler", "--host", "127.0.0.1"]
    try:
        await pool.warm(cmd, job_env(str(tmp_path)))
        first = pool._idle[0]
        other = job_env(str(tmp_path), PYTHONPATH=str(tmp_path / "elsewhere"))
        assert await pool.start(cmd, other, str(tmp_path), str(tmp_path / "x.log")) is None
        assert not (tmp_path / "x.log").exists(), "nothing ran: the caller starts it cold"
        await asyncio.wait_for(first.wait(), 30)  # the old environment's interpreter is gone
        assert pool._idle and pool._idle[0] is not first
        assert await pool.start(["/bin/true"], other, str(tmp_path), "unused") is None
    finally:
        await pool.close()
    assert pool._idle == []


@pytest.mark.asyncio
async def test_a_data_dir_too_long_for_a_socket_starts_cold_and_says_why(tmp_path, caplog):
    deep = tmp_path / ("d" * max(1, 110 - len(str(tmp_path))))
    pool = WarmInterpreterPool(1, str(deep))
    cmd = [DASK, "scheduler"]
    await pool.warm(cmd, job_env(str(deep)))
    assert pool._idle == []
    assert "too long for a fork server's socket" in caplog.text
    assert await pool.start(cmd, job_env(str(deep)), str(deep), str(deep / "log")) is None
    await pool.close()


@pytest.mark.asyncio
async def test_a_pool_of_size_zero_starts_nothing(tmp_path):
    pool = WarmInterpreterPool(0, str(tmp_path))
    cmd = [DASK, "scheduler"]
    await pool.warm(cmd, {})
    assert pool._idle == []
    assert await pool.start(cmd, {}, str(tmp_path), str(tmp_path / "log")) is None
    await pool.close()


def test_a_prewarm_is_three_per_expected_cluster_within_a_quarter_of_the_memory():
    gib = 2**30
    # 10 attendees on a machine with room: 30 interpreters.
    count, held = prewarm_plan(10, 64 * gib)
    assert count == 10 * WARM_PER_CLUSTER and held == count * WARM_INTERPRETER_BYTES
    # 100 attendees on 8 GiB: what a quarter of it holds, no more.
    count, held = prewarm_plan(100, 8 * gib)
    assert count == (2 * gib) // WARM_INTERPRETER_BYTES and held <= 2 * gib
    # However little memory, a quiet platform's three stay.
    assert prewarm_plan(30, 100 * 2**20)[0] == WARM_PER_CLUSTER


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_prewarm_is_filled_once_and_refills_go_back_to_a_few(short_dir):
    tmp_path = short_dir
    pool = WarmInterpreterPool(4, str(tmp_path), refill_delay=0.2, refill_size=1)
    cmd = [DASK, "scheduler", "--host", "127.0.0.1"]
    pids: list[int] = []
    try:
        await pool.warm(cmd, job_env(str(tmp_path)))
        assert len(pool._idle) == 4
        # Hand out all four, as a room's first clusters take them.
        for i in range(4):
            log = str(tmp_path / f"s{i}.log")
            pids.append(await pool.start(cmd, job_env(str(tmp_path)), str(tmp_path), log))
        assert all(pids) and pool._idle == []

        for _ in range(450):  # the pool has no event to wait on: look every 0.2 s
            if pool._idle:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # would a second one follow?
        assert len(pool._idle) == 1
    finally:
        await pool.close()
        stop_all(pids)
