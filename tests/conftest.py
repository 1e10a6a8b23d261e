"""Running the suite in parallel: ``pytest -n 2`` (pytest-xdist), as ``./bootstrap test``
does. Without ``-n`` nothing here changes anything.

- Each module runs whole in one worker (its module-scoped platform is started once), and
  modules that use the same fixed resources of the machine share a worker, one after the
  other: the Kubernetes tests whose engine pods listen on the engines' fixed ports (Spark
  7077/8080/8081, IPyParallel's; the chart's hub port is 8081 too), and the tests that run
  a private Docker engine.
- The longest go first (the two shared groups, one to each worker, then the longest
  modules), each to whichever worker is free: the run ends with short modules, not with one
  worker idle while the other starts a long one.
- Each worker chooses ports from its own slice of the chosen-port range
  (``CLUSTERHUB_PORT_RANGE``, inherited by every platform a test starts), so two workers never
  pick the same port between choosing and binding it.
"""

from __future__ import annotations

import os

import pytest

from clusterhub.ports import PORT_RANGE_ENV, chosen_range

# The Kubernetes emulator's fixtures (kube_api, kube_cluster...), for every module.
pytest_plugins = ["tests.kube.fixtures"]

# group -> the module name prefixes that belong to it
SHARED_GROUPS = {
    "engine-ports": ("test_kube_engines", "test_kube_kernels", "test_kube_chart_hub"),
    "docker": ("test_images",),
}
# Groups and modules that take longest, longest first (measured in full runs); the rest
# follow in file order.
LONGEST_FIRST = (
    "engine-ports",
    "docker",
    "test_platform_e2e",
    "test_browser_hosts",
    "test_strangers",
    "test_hub_restart",
    "test_build",
    "test_clusters_core",
    "test_gateway_faults",
    "test_gateway_kube",
    "test_kube_spawner",
    "test_room",
    "test_accounts",
    "test_clusters_handlers",
)


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


def module_group(nodeid: str) -> str:
    """The group of a test's module: a shared group, or the module on its own."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    for group, prefixes in SHARED_GROUPS.items():
        if module.startswith(prefixes):
            return group
    return module


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Whole groups to a worker, in collection order (xdist's own ``loadgroup`` marks need
    to rewrite node ids, which this pytest no longer allows)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return module_group(nodeid)

    config.option.loadscopereorder = False
    return ModuleGroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    # Sorted stably, so a module's tests keep their order.
    rank = {group: number for number, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(module_group(item.nodeid), len(rank)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that ran on a whole platform reports the tails of its logs."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when == "teardown":
        return
    platform = getattr(item, "funcargs", {}).get("platform")
    tails = getattr(platform, "log_tails", None)
    if callable(tails):
        try:
            report.sections.append(("platform logs", tails()))
        except Exception as exc:  # the report must not fail for want of logs
            report.sections.append(("platform logs", f"unreadable: {exc}"))
