"""``clusterhub-engine MODE [args...]``: the cluster image's entrypoint.

One image runs every engine process of a space; the mode (the first argument, set by the
engine's Deployment) picks which. Addresses and ports come from the environment the
Deployment sets (see ``clusterhub.spawner.kubeobjects``); extra arguments are passed on
unchanged. The process is exec'd, so it receives the pod's signals directly.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping

BIND_ENV = "CLUSTERHUB_BIND_HOST"


def _dask() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "dask")
    return here if os.path.exists(here) else shutil.which("dask") or "dask"


def _spark_class() -> str:
    from clusterhub.engines.local_spark import spark_home

    return os.path.join(spark_home(), "bin", "spark-class")


def _required(env: Mapping[str, str], name: str, mode: str) -> str:
    value = env.get(name)
    if not value:
        raise SystemExit(f"clusterhub-engine {mode}: the environment variable {name} is not set")
    return value


def _dask_scheduler(env, host, args):
    return [_dask(), "scheduler", "--host", host, "--port", "8786",
            "--dashboard-address", f"{host}:8787", *args]  # fmt: skip


def _dask_worker(env, host, args):
    address = _required(env, "DASK_SCHEDULER_ADDRESS", "dask-worker")
    # The dashboard too: without it, the worker's dashboard listens on every interface.
    return [_dask(), "worker", address, "--host", host, "--dashboard-address", f"{host}:0", *args]


def _dask_gateway_scheduler(env, host, args):
    # A Dask Gateway cluster's scheduler: the gateway chooses every option (TLS, ports, its
    # preload that reports to it), so they pass through unchanged.
    return [_dask(), "scheduler", *args]


def _dask_gateway_worker(env, host, args):
    return [_dask(), "worker", *args]


def _spark_master(env, host, args):
    return [
        _spark_class(),
        "org.apache.spark.deploy.master.Master",
        "--host", host,
        "--port", env.get("SPARK_MASTER_PORT", "7077"),
        "--webui-port", env.get("SPARK_MASTER_WEBUI_PORT", "8080"),
        *args,
    ]  # fmt: skip


def _spark_worker(env, host, args):
    master = _required(env, "SPARK_MASTER_URL", "spark-worker")
    return [
        _spark_class(),
        "org.apache.spark.deploy.worker.Worker",
        "--host", host,
        "--webui-port", env.get("SPARK_WORKER_WEBUI_PORT", "8081"),
        *args,
        master,
    ]  # fmt: skip


def _ipcontroller(env, host, args):
    return [sys.executable, "-m", "ipyparallel.controller", f"--ip={host}", *args]


def _ipengine(env, host, args):
    # ipengine reads its connection info from $IPP_CONNECTION_INFO (set from a Secret).
    _required(env, "IPP_CONNECTION_INFO", "ipengine")
    return [sys.executable, "-m", "ipyparallel.engine", *args]


MODES: dict[str, Callable[[Mapping[str, str], str, list[str]], list[str]]] = {
    "dask-scheduler": _dask_scheduler,
    "dask-worker": _dask_worker,
    "dask-gateway-scheduler": _dask_gateway_scheduler,
    "dask-gateway-worker": _dask_gateway_worker,
    "spark-master": _spark_master,
    "spark-worker": _spark_worker,
    "ipcontroller": _ipcontroller,
    "ipengine": _ipengine,
}


def command_for(mode: str, args: list[str], env: Mapping[str, str]) -> list[str]:
    """The command line a mode runs, or SystemExit with the allowed modes."""
    if mode not in MODES:
        raise SystemExit(
            f"clusterhub-engine: unknown mode {mode!r}; choose one of: {', '.join(MODES)}"
        )
    return MODES[mode](env, env.get(BIND_ENV, "0.0.0.0"), args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: clusterhub-engine MODE [args...]\nmodes: {', '.join(MODES)}")
        raise SystemExit(0 if argv else 2)
    command = command_for(argv[0], argv[1:], os.environ)
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
