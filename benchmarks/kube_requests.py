"""Kubernetes API requests and time per spawn and per stop: KubeSpaceSpawner vs KubeSpawner.

    python -m benchmarks.kube_requests [--users 5]

Both spawners run against the test suite's Kubernetes emulator, whose process-kubelet
really starts each notebook pod (a small HTTP server stands in for jupyterhub-singleuser:
the API traffic is the spawner's, not the server's). Plain KubeSpawner has user
namespaces on but creates no quota, policies or roles, and never deletes the namespace:
the difference is the price of a real space. Printed: requests per spawn and per stop by
verb, spawn-to-ready and stop times, and their ratios ours/plain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter


def free_port() -> int:
    from clusterhub.ports import free_port as chosen_port  # outside the ephemeral range

    return chosen_port()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


async def run(cls_name: str, users: int, cluster) -> dict:
    from jupyterhub.objects import Hub
    from kubespawner import KubeSpawner
    from traitlets.config import Config

    from clusterhub.spawner.kube import KubeSpaceSpawner
    from tests.kube import StandInUser

    cls = KubeSpaceSpawner if cls_name == "clusterhub" else KubeSpawner
    spawn_counts, stop_counts = Counter(), Counter()
    spawn_times, stop_times = [], []
    for i in range(users):
        port = free_port()
        cfg = Config()
        section = cfg[cls.__name__]
        section.enable_user_namespaces = True
        section.user_namespace_template = "plain-{username}"
        section.image = "notebook:bench"
        section.cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        section.port = port
        section.start_timeout = 60
        if cls is KubeSpaceSpawner:
            section.hub_namespace = "hub"
            section.cluster_image = "cluster:bench"
            section.namespace_delete_timeout = 60
        spawner = cls(
            hub=Hub(), user=StandInUser(f"{cls_name}{i}"), config=cfg, api_token="t",
            oauth_client_id="unused",
        )  # fmt: skip
        if cls is KubeSpaceSpawner:
            spawner.user_options = {"profile": "dask"}
        cluster.reset_request_counts()
        start = time.perf_counter()
        url = await spawner.start()
        # The pod runs before its server listens; like JupyterHub, poll until it answers.
        for _ in range(3000):
            if answers(url + "/"):
                break
            await asyncio.sleep(0.02)
        spawn_times.append(time.perf_counter() - start)
        spawn_counts.update(cluster.request_counts())
        cluster.reset_request_counts()
        start = time.perf_counter()
        await spawner.stop()
        stop_times.append(time.perf_counter() - start)
        stop_counts.update(cluster.request_counts())
    await KubeSpawner._stop_all_reflectors()
    return {
        "spawn": {k: v / users for k, v in spawn_counts.items()},
        "stop": {k: v / users for k, v in stop_counts.items()},
        "spawn_time": statistics.median(spawn_times),
        "stop_time": statistics.median(stop_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="kube-bench-")
    from tests.kube.fixtures import KubeCluster

    cluster = KubeCluster(workdir)
    cluster.start()
    os.environ["KUBECONFIG"] = cluster.kubeconfig
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    try:
        results = {}
        for name in ("plain", "clusterhub"):
            results[name] = asyncio.run(run(name, args.users, cluster))
    finally:
        cluster.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    for phase in ("spawn", "stop"):
        for name, result in results.items():
            counts = result[phase]
            total = sum(counts.values())
            detail = ", ".join(f"{k}: {v:g}" for k, v in sorted(counts.items()))
            print(f"{phase} requests {name:10s}: {total:g} per user ({detail})")
        plain = sum(results["plain"][phase].values())
        ours = sum(results["clusterhub"][phase].values())
        print(f"{phase} requests ratio clusterhub/plain: {ours / plain:.2f}")
    for phase in ("spawn_time", "stop_time"):
        plain, ours = results["plain"][phase], results["clusterhub"][phase]
        print(
            f"{phase}: plain {plain:.2f} s, clusterhub {ours:.2f} s, "
            f"ratio clusterhub/plain {ours / plain:.2f}"
        )


if __name__ == "__main__":
    main()
