"""Running the suite in parallel: ``pytest -n 2 --dist loadgroup`` (pytest-xdist), as
``.ci/run`` does. Without ``-n`` nothing here changes anything.

- Each module runs whole in one worker (its module-scoped platform is started once), and
  modules that use the same fixed resources of the machine share a worker, one after the
  other: the Kubernetes tests (their engine pods listen on the engines' fixed ports: Spark
  7077/8080/8081, IPyParallel's, the chart's hub port 8081) and the tests that run a private
  Docker engine.
- Each worker chooses ports from its own slice of the chosen-port range
  (``CLUSTERHUB_PORT_RANGE``, inherited by every platform a test starts), so two workers never
  pick the same port between choosing and binding it.
"""

from __future__ import annotations

import os

import pytest

from clusterhub.ports import PORT_RANGE_ENV, chosen_range

SHARED_GROUPS = {
    "kubernetes": (
        "test_kube_",
        "test_gateway_kube",
        "test_gateway_faults",
        "test_engine_entrypoint",
    ),
    "docker": ("test_images",),
}


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or PORT_RANGE_ENV in os.environ:
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:])
    low, high = chosen_range()
    share = (high - low + 1) // count
    start = low + index * share
    os.environ[PORT_RANGE_ENV] = f"{start}-{start + share - 1}"


def _group(item: pytest.Item) -> str:
    if item.get_closest_marker("images"):
        return "docker"
    module = item.module.__name__.rsplit(".", 1)[-1] if item.module else item.nodeid
    for group, prefixes in SHARED_GROUPS.items():
        if module.startswith(prefixes):
            return group
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
