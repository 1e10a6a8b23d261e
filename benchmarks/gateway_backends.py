"""Our Dask Gateway backend vs dask-gateway-server's own, for the same mode, in one run.

    python -m benchmarks.gateway_backends [--workers 2] [--scale-to 8] [--repeat 1]

For each backend a real dask-gateway-server runs on loopback with the same authenticator
(dask-gateway's SimpleAuthenticator, so only the backend differs) and the same scheduler and
worker commands; a client in a separate process measures

- cluster ready: ``new_cluster()`` + ``scale(N)`` until N workers have joined;
- scale-up: ``scale(M)`` from N until M workers have joined.

Local mode: ``LocalSpaceBackend`` (clusters in the owner's space, profile-bounded options,
reaper) against ``UnsafeLocalBackend``. Kubernetes mode has no upstream counterpart that can
run here: dask-gateway's Kubernetes backend needs its controller, its CRDs and a Traefik
proxy, and Traefik is neither on PyPI nor in Debian (no other registry is reachable).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from clusterhub.gateway.config import dask_command
from clusterhub.ports import wait_for_port
from clusterhub.space import LocalSpace
from tests.hubclient import free_port

PASSWORD = "bench-password"
USER = "bench"

COMMON_CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{http}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {password!r}
c.ClusterConfig.scheduler_cmd = {scheduler!r}
c.ClusterConfig.worker_cmd = {worker!r}
c.ClusterConfig.scheduler_memory = "512 M"
c.ClusterConfig.cluster_max_workers = 64
"""

BASELINE = """
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
"""

OURS = """
from clusterhub.gateway.options import make_cluster_options
from clusterhub.space import LocalSpace

c.DaskGateway.backend_class = "clusterhub.gateway.local.LocalSpaceBackend"
c.LocalSpaceBackend.data_dir = {data_dir!r}
c.LocalSpaceBackend.cluster_options = make_cluster_options(
    lambda username: LocalSpace({data_dir!r}, username)
)
"""

CLIENT = """
import sys, time
from dask_gateway import Gateway
from dask_gateway.auth import BasicAuth

address, proxy, password, n, m, repeat = sys.argv[1:7]
n, m, repeat = int(n), int(m), int(repeat)
gateway = Gateway(address, proxy_address=proxy, auth=BasicAuth("bench", password))
for _ in range(repeat):
    start = time.perf_counter()
    cluster = gateway.new_cluster()
    cluster.scale(n)
    client = cluster.get_client()
    client.wait_for_workers(n, timeout=300)
    ready = time.perf_counter() - start
    start = time.perf_counter()
    cluster.scale(m)
    client.wait_for_workers(m, timeout=300)
    scale = time.perf_counter() - start
    print(f"{ready:.3f} {scale:.3f}", flush=True)
    client.close()
    cluster.shutdown()
"""


def measure(
    backend_config: str, root: str, n: int, m: int, repeat: int
) -> list[tuple[float, float]]:
    api, http, tcp = free_port(), free_port(), free_port()
    config = os.path.join(root, "gateway_config.py")
    with open(config, "w") as f:
        f.write(
            COMMON_CONFIG.format(
                api=api,
                http=http,
                tcp=tcp,
                password=PASSWORD,
                scheduler=dask_command("scheduler"),
                worker=dask_command("worker"),
            )
            + backend_config
        )
    log = open(os.path.join(root, "gateway.log"), "wb")
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dask-gateway-server"), "-f", config],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", http, 60)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CLIENT,
                f"http://127.0.0.1:{http}",
                f"gateway://127.0.0.1:{tcp}",
                PASSWORD,
                str(n),
                str(m),
                str(repeat),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        return [tuple(float(x) for x in line.split()) for line in out.stdout.split("\n") if line]
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers of a ready cluster")
    parser.add_argument("--scale-to", type=int, default=8, help="workers after the scale-up")
    parser.add_argument("--repeat", type=int, default=1, help="clusters per backend")
    args = parser.parse_args()
    for name, value, low in (("--workers", args.workers, 1), ("--repeat", args.repeat, 1)):
        if value < low:
            parser.error(f"{name}: must be at least {low}, not {value}")
    if args.scale_to <= args.workers:
        parser.error(
            f"--scale-to: must be more than --workers ({args.workers}), not {args.scale_to}"
        )

    with tempfile.TemporaryDirectory() as root:
        baseline = measure(BASELINE, root, args.workers, args.scale_to, args.repeat)
    with tempfile.TemporaryDirectory() as root:
        # What the spawner records for a running server: an active space with its limits.
        space = LocalSpace(root, USER)
        space.create()
        space.write_state(
            active=True,
            limits={"workers": args.scale_to, "worker_cores": 1, "worker_memory_gib": 1},
        )
        ours = measure(OURS.format(data_dir=root), root, args.workers, args.scale_to, args.repeat)

    n, m = args.workers, args.scale_to
    for index, label in (
        (0, f"cluster ready (new_cluster + {n} workers)"),
        (1, f"scale-up {n} -> {m}"),
    ):
        b = statistics.median(r[index] for r in baseline)
        o = statistics.median(r[index] for r in ours)
        print(
            f"{label:<40} UnsafeLocalBackend {b:6.2f} s   LocalSpaceBackend {o:6.2f} s   "
            f"ratio {o / b:.2f}"
        )
    print("kubernetes: no upstream backend to compare on this machine (see the docstring)")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"(total {time.monotonic() - start:.0f} s)")
