import json
import os
import signal
import subprocess
import sys
import time

import pytest

from clusterhub.engines.entrypoint import command_for

ENV = {
    "CLUSTERHUB_BIND_HOST": "127.0.0.1",
    "SPARK_MASTER_URL": "spark://spark-master.ns.svc:7077",
    "DASK_SCHEDULER_ADDRESS": "tcp://dask-scheduler.ns.svc:8786",
    "IPP_CONNECTION_INFO": "{}",
}


def test_each_mode_runs_its_process_with_the_deployments_settings():
    dask = command_for("dask-worker", ["--nthreads", "2"], ENV)
    assert dask[1:] == [
        "worker",
        "tcp://dask-scheduler.ns.svc:8786",
        "--host",
        "127.0.0.1",
        "--dashboard-address",
        "127.0.0.1:0",
        "--nthreads",
        "2",
    ]
    spark = command_for("spark-worker", ["--cores", "1"], ENV)
    assert spark[0].endswith("bin/spark-class")
    assert spark[1:] == [
        "org.apache.spark.deploy.worker.Worker",
        "--host",
        "127.0.0.1",
        "--webui-port",
        "8081",
        "--cores",
        "1",
        "spark://spark-master.ns.svc:7077",
    ]
    master = command_for("spark-master", [], {**ENV, "SPARK_MASTER_PORT": "17077"})
    assert master[2:6] == ["--host", "127.0.0.1", "--port", "17077"]
    assert command_for("ipcontroller", ["--reuse"], ENV)[1:] == [
        "-m",
        "ipyparallel.controller",
        "--ip=127.0.0.1",
        "--reuse",
    ]
    assert command_for("dask-scheduler", [], {})[2:4] == ["--host", "0.0.0.0"]


def test_unknown_mode_and_missing_settings_are_refused_clearly():
    with pytest.raises(SystemExit, match="unknown mode 'mpi'; choose one of: dask-scheduler"):
        command_for("mpi", [], ENV)
    with pytest.raises(SystemExit, match="spark-worker: the environment variable SPARK_MASTER_URL"):
        command_for("spark-worker", [], {})
    with pytest.raises(SystemExit, match="ipengine: the environment variable IPP_CONNECTION_INFO"):
        command_for("ipengine", [], {})


def scheduler_address(scheduler_file, proc: subprocess.Popen, timeout: float = 60) -> str:
    """The address a scheduler that bound port 0 reports in its scheduler file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if scheduler_file.exists():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (ValueError, KeyError):
                pass  # still being written
        time.sleep(0.1)
    raise AssertionError(f"the scheduler reported no address (exit code {proc.poll()})")


@pytest.mark.slow
def test_a_scheduler_and_a_worker_started_through_the_entrypoint_run_a_task(tmp_path):
    from distributed import Client

    # TMPDIR as a container's own /tmp: the worker's scratch space stays in the test's dir.
    env = {
        **os.environ,
        "CLUSTERHUB_BIND_HOST": "127.0.0.1",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
    }
    entry = [sys.executable, "-m", "clusterhub.engines.entrypoint"]
    # Port 0: the scheduler takes a free port and reports it, so no other process can take
    # the port between our choosing it and the scheduler binding it.
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [
            *entry,
            "dask-scheduler",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    worker = None
    try:
        address = scheduler_address(scheduler_file, scheduler)
        env["DASK_SCHEDULER_ADDRESS"] = address
        worker = subprocess.Popen(
            [*entry, "dask-worker", "--nthreads", "1", "--no-dashboard"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
    finally:
        running = [p for p in (worker, scheduler) if p is not None]
        for proc in running:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
