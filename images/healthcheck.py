#!/usr/bin/python3
"""``clusterhub-healthcheck [WHAT]``: exit 0 when this container's service answers.

The images' HEALTHCHECK. WHAT is found from the container's main command (``/proc/1``) unless
given: ``jupyterhub``, ``dask-gateway-server``, ``configurable-http-proxy``, ``notebook``
(jupyter / jupyterhub-singleuser) or a cluster mode (``dask-scheduler``, ``spark-master``, ...).
``$CLUSTERHUB_HEALTHCHECK_URL`` overrides the URL of the HTTP checks. Uses only the standard
library and Debian's python3, so it works whatever is installed in /opt/clusterhub.

Kubernetes ignores HEALTHCHECK (the chart has its own probes); this is for docker and compose.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
import urllib.request

TIMEOUT = 5.0
MODES = (
    "dask-scheduler",
    "dask-worker",
    "spark-master",
    "spark-worker",
    "ipcontroller",
    "ipengine",
)


def _main_command() -> tuple[list[str], bool]:
    """The container's command line, without tini, and whether tini runs it."""
    with open("/proc/1/cmdline", "rb") as f:
        argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    # Under tini, the real command follows "--" (or tini's own options).
    if argv and os.path.basename(argv[0]) == "tini":
        return (argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]), True
    return argv, False


def _what(argv: list[str]) -> str:
    names = [os.path.basename(a) for a in argv]
    for mode in MODES:
        if mode in names:
            return mode
    for name in ("dask-gateway-server", "configurable-http-proxy", "jupyterhub"):
        if name in names:
            return name
    if any(n in ("jupyter", "jupyter-lab", "jupyterhub-singleuser") for n in names):
        return "notebook"
    return "process"


def _option(argv: list[str], name: str, default: str) -> str:
    """The last value of ``--name X`` / ``--name=X`` in argv (later options win), or default."""
    value = default
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _local(host: str) -> str:
    # Services bound to every address answer on loopback.
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "*") else host


def _http(url: str) -> None:
    with urllib.request.urlopen(os.environ.get("CLUSTERHUB_HEALTHCHECK_URL", url), timeout=TIMEOUT):
        pass  # urlopen raises on errors and on 4xx/5xx


def _tcp(port: str | int) -> None:
    host = _local(os.environ.get("CLUSTERHUB_BIND_HOST", ""))
    socket.create_connection((host, int(port)), timeout=TIMEOUT).close()


def _children_alive(under_tini: bool) -> None:
    # Modes without a listening port of their own (workers, engines): healthy while the
    # process under tini runs (when it exits, tini exits and so does the container). Without
    # tini, PID 1 is the process itself, and it runs: we are in its container.
    if not under_tini:
        return
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != "1":
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[1] == "1" and fields[0] not in ("Z", "X"):
                return
    raise RuntimeError("no running process under PID 1")


def _notebook_url(argv: list[str]) -> str:
    # A hub-spawned server says where it listens (and under which prefix) in its environment.
    service_url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if service_url:
        parts = urllib.parse.urlsplit(service_url)
        host = _local(parts.hostname or "")
        return f"http://{host}:{parts.port or 80}{parts.path.rstrip('/')}/api"
    return f"http://127.0.0.1:{_option(argv, '--port', '8888')}/api"


def check(what: str, argv: list[str], under_tini: bool) -> None:
    env = os.environ
    if what == "jupyterhub":
        _http("http://127.0.0.1:8081/hub/health")
    elif what == "dask-gateway-server":
        _http("http://127.0.0.1:8000/services/dask-gateway/api/health")
    elif what == "configurable-http-proxy":
        _tcp(_option(argv, "--port", "8000"))
    elif what == "notebook":
        _http(_notebook_url(argv))
    elif what == "dask-scheduler":
        _tcp(_option(argv, "--port", "8786"))
    elif what == "spark-master":
        _tcp(_option(argv, "--port", env.get("SPARK_MASTER_PORT", "7077")))
    elif what == "spark-worker":
        _tcp(_option(argv, "--webui-port", env.get("SPARK_WORKER_WEBUI_PORT", "8081")))
    elif "CLUSTERHUB_HEALTHCHECK_URL" in env:
        _http(env["CLUSTERHUB_HEALTHCHECK_URL"])
    else:
        _children_alive(under_tini)


def main() -> int:
    argv, under_tini = _main_command()
    what = sys.argv[1] if len(sys.argv) > 1 else _what(argv)
    try:
        check(what, argv, under_tini)
    except Exception as exc:  # any failure means unhealthy; say why for `docker inspect`
        print(f"clusterhub-healthcheck {what}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
