"""Dask schedulers and workers forked warm become real ones, with the requested environment."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import psutil
import pytest
from distributed import Client

from clusterhub import procs
from clusterhub.gateway.warm_pool import DaskForkServer, fingerprint

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


@pytest.mark.skipif(os.geteuid() != 0, reason="the fork server imports as root only as root")
def test_as_root_an_environment_built_from_a_repository_is_never_imported_warm(tmp_path):
    built = tmp_path / "build-1" / "venv" / "bin"
    built.mkdir(parents=True)
    (built / "python").symlink_to(sys.executable)
    (built / "dask").write_text(f"#!{built / 'python'}\n")
    assert fingerprint([str(built / "dask"), "worker", "tcp://x:1"], {}) is None
    assert fingerprint([DASK, "worker", "tcp://x:1"], {}) is not None, "the platform's own"


def scheduler_command() -> list[str]:
    return [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"]


def worker_command(address: str) -> list[str]:
    cmd = [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny"]
    return cmd + ["--dashboard-address", "127.0.0.1:0", "--memory-limit", "1GiB"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_forked_scheduler_and_worker_run_as_requested(tmp_path):
    space = tmp_path / "spaces" / "ada"
    cluster_dir = space / "dask-gateway" / "c1"
    cluster_dir.mkdir(parents=True)
    server = DaskForkServer(True, str(tmp_path))
    env = job_env(
        str(space),
        CLUSTERHUB_JOB_VALUE="from-the-request",
        # Dask config arrives with the request, after the fork server imported Dask.
        DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="7",
    )
    pids: list[int] = []
    try:
        await server.warm(scheduler_command(), env)
        assert server.pid is not None
        scheduler_log = str(cluster_dir / "scheduler.log")
        pid = await server.start(scheduler_command(), env, str(cluster_dir), scheduler_log)
        assert pid is not None
        pids.append(pid)
        log = await wait_for_text(scheduler_log, "Scheduler at:")
        address = log.split("Scheduler at:")[1].split()[0]

        worker_log = str(cluster_dir / "worker.log")
        cmd = worker_command(address)
        own_host = "ada-dask-1" if os.geteuid() == 0 else None  # UTS namespaces need root
        worker_pid = await server.start(cmd, env, str(cluster_dir), worker_log, None, 500, own_host)
        assert worker_pid is not None and worker_pid != pid
        pids.append(worker_pid)

        async with Client(address, asynchronous=True, timeout=60) as client:
            await client.wait_for_workers(1, timeout=60)

            def look() -> dict:
                import os
                import socket

                import dask

                with open("/proc/self/oom_score_adj") as f:
                    oom = int(f.read())
                return {
                    "pid": os.getpid(),
                    "value": os.environ.get("CLUSTERHUB_JOB_VALUE"),
                    "home": os.environ.get("HOME"),
                    "cwd": os.getcwd(),
                    "failures": dask.config.get("distributed.scheduler.allowed-failures"),
                    "oom": oom,
                    "hostname": socket.gethostname(),
                }

            on_scheduler = await client.run_on_scheduler(look)
            (on_worker,) = (await client.run(look)).values()
            assert await client.submit(lambda x: x + 1, 41) == 42
        for seen in (on_scheduler, on_worker):
            assert seen["value"] == "from-the-request"
            assert seen["home"] == str(space)
            assert seen["cwd"] == str(cluster_dir)
        assert int(on_scheduler["failures"]) == 7
        assert (on_scheduler["oom"], on_worker["oom"]) == (0, 500)
        assert on_worker["hostname"] == (own_host or socket.gethostname())
        assert on_scheduler["hostname"] == socket.gethostname(), "only the worker's differs"
        # Both are the fork server's children, each in a session of its own; the worker has
        # no nanny: it is the process the gateway started.
        assert on_worker["pid"] == worker_pid and on_scheduler["pid"] == pid
        for child in (pid, worker_pid):
            assert psutil.Process(child).ppid() == server.pid
            assert os.getsid(child) == child
        assert "Memory:                   1.00 GiB" in await wait_for_text(worker_log, "Memory:")

        # The kernel still shows the fork server's starting environment, without the
        # space's marker; their working directory tells whose they are.
        found = {p.pid for p in procs.find_marked(procs.SPACE_MARKER, str(space), str(space))}
        assert {pid, worker_pid} <= found
        assert pid not in {p.pid for p in procs.find_marked(procs.SPACE_MARKER, str(space))}
        assert procs.sweep(procs.SPACE_MARKER, str(space), cwd_under=str(space)) >= 2
        # Reaped by the fork server at once: a pid that answers signal 0 is alive.
        for child in (pid, worker_pid):
            for _ in range(50):
                if not psutil.pid_exists(child):
                    break
                await asyncio.sleep(0.1)
            assert not psutil.pid_exists(child), "left a zombie"
        assert server.pid is not None, "the fork server runs on"
    finally:
        await server.close()
        stop_all(pids)
    assert server.pid is None


@pytest.mark.asyncio
async def test_a_planted_log_link_is_refused_and_nothing_runs(tmp_path):
    target = tmp_path / "not-yours"
    target.write_text("untouched")
    log = tmp_path / "scheduler.log"
    log.symlink_to(target)
    server = DaskForkServer(True, str(tmp_path))
    try:
        await server.warm(scheduler_command(), job_env(str(tmp_path)))
        pid = await server.start(
            scheduler_command(), job_env(str(tmp_path)), str(tmp_path), str(log)
        )
        assert pid is not None
        for _ in range(100):
            if not psutil.pid_exists(pid):
                break
            await asyncio.sleep(0.1)
        assert not psutil.pid_exists(pid), "the child gave up at once"
        assert target.read_text() == "untouched"
    finally:
        await server.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_another_environment_starts_cold_and_retargets(tmp_path):
    server = DaskForkServer(True, str(tmp_path))
    cmd = scheduler_command()
    try:
        await server.warm(cmd, job_env(str(tmp_path)))
        first = server.pid
        other = job_env(str(tmp_path), PYTHONPATH=str(tmp_path / "elsewhere"))
        assert await server.start(cmd, other, str(tmp_path), str(tmp_path / "x.log")) is None
        assert not (tmp_path / "x.log").exists(), "nothing ran: the caller starts it cold"
        for _ in range(300):  # the retarget runs on after start() said "cold"
            if server.pid not in (None, first):
                break
            await asyncio.sleep(0.1)
        assert server.pid not in (None, first), "a fork server for the other environment"
        assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"
        assert await server.start(["/bin/true"], other, str(tmp_path), "unused") is None
    finally:
        await server.close()
    assert server.pid is None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_after_the_fork_server_dies_one_start_goes_cold_then_warm_again(tmp_path):
    server = DaskForkServer(True, str(tmp_path))
    cmd = scheduler_command()
    env = job_env(str(tmp_path))
    pids: list[int] = []
    try:
        await server.warm(cmd, env)
        os.kill(server.pid, 9)
        await asyncio.sleep(0.5)
        assert await server.start(cmd, env, str(tmp_path), str(tmp_path / "a.log")) is None
        pid = await server.start(cmd, env, str(tmp_path), str(tmp_path / "b.log"))
        assert pid is not None, "a new fork server serves the next start"
        pids.append(pid)
        await wait_for_text(str(tmp_path / "b.log"), "Scheduler at:")
    finally:
        await server.close()
        stop_all(pids)


@pytest.mark.asyncio
async def test_a_disabled_fork_server_starts_nothing(tmp_path):
    server = DaskForkServer(False, str(tmp_path))
    cmd = scheduler_command()
    await server.warm(cmd, {})
    assert server.pid is None
    assert await server.start(cmd, {}, str(tmp_path), str(tmp_path / "log")) is None
    await server.close()
