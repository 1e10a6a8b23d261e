"""Hosts popping up on one machine, in the real JupyterLab page in headless Chromium.

For each engine, Dask, Spark and IPyParallel, the attendee starts a map of slow tasks on one
worker from a notebook typed into the page, and while it runs scales the engine to 4 workers
with the sidebar's card. The hostnames view shows the new hosts arrive while the map runs
(fewer tasks counted than the map has when the fourth appears), then lists exactly the four
hostnames the workers have, each read inside the worker itself (``uname -n``), and its counts
add up to the map's tasks. Screenshots before and after each scale go with the others (see
:mod:`labpage`).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from hubclient import running_platform, space_dir, started_user
from labpage import lab_page, open_clusters_sidebar, open_notebook, run_cell, shot

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="workers have hostnames of their own as root"),
]

WORKERS = 4
# Long enough on one worker that the other three arrive while the map runs: a Spark worker
# and its executor are two JVMs to start on a busy machine.
TASKS = {"dask": 200, "spark": 200, "ipyparallel": 200}
SECONDS = {"dask": 0.3, "spark": 0.5, "ipyparallel": 0.3}

MAPS = {
    "dask": """\
import json, os, time
from dask_gateway import Gateway

def slow(i):
    time.sleep({seconds})
    return os.uname().nodename

gateway = Gateway()
cluster = gateway.connect(gateway.list_clusters()[0].name)
client = cluster.get_client()
futures = client.map(slow, range({tasks}), pure=False)
print("STARTED=yes")
""",
    "spark": """\
import threading, time
from pyspark.sql import SparkSession

def slow(i):
    import os, time
    time.sleep({seconds})
    return os.uname().nodename

spark = SparkSession.builder.appName("hosts-popping-up").getOrCreate()
ran = {{}}
job = threading.Thread(
    target=lambda: ran.update(hosts=spark.sparkContext.parallelize(
        range({tasks}), {tasks}).map(slow).collect()))
job.start()
print("STARTED=yes")
""",
    "ipyparallel": """\
import ipyparallel as ipp

def slow(i):
    import os, time
    time.sleep({seconds})
    return os.uname().nodename

rc = ipp.Client()
rc.wait_for_engines(1, timeout=120)
running = rc.load_balanced_view().map_async(slow, range({tasks}))
print("STARTED=yes")
""",
}

# What the workers' own hostnames are, asked of each worker (Dask, IPyParallel); Spark's
# are read by the test inside each worker JVM's namespace.
UNAMES = {
    "dask": """\
import json, os
client.gather(futures)
print("UNAMES=" + json.dumps(sorted(client.run(lambda: os.uname().nodename).values())))
""",
    "spark": """\
import json
job.join()
print("UNAMES=" + json.dumps(sorted(set(ran["hosts"]))))
""",
    "ipyparallel": """\
import json

def nodename():
    import os
    return os.uname().nodename

running.get(timeout=300)
rc.wait_for_engines({workers}, timeout=120)
print("UNAMES=" + json.dumps(sorted(set(rc[:].apply_sync(nodename)))))
""",
}

PROFILES = {"dask": "dask", "spark": "dask-spark", "ipyparallel": "dask-ipyparallel"}
USERS = {"dask": "hana", "spark": "ivan", "ipyparallel": "jun"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(str(tmp_path_factory.mktemp("platform"))) as running:
        yield running


def counted(page) -> int:
    return page.evaluate(
        """() => [...document.querySelectorAll('.jp-ClusterHub-host .jp-ClusterHub-count')]
            .reduce((sum, c) => sum + Number(c.textContent), 0)"""
    )


def shown_hosts(view) -> list[str]:
    hosts = view.locator(".jp-ClusterHub-host[data-hostname]")
    return sorted(hosts.nth(i).get_attribute("data-hostname") for i in range(hosts.count()))


def spark_worker_unames(platform, user: str) -> list[str]:
    """``uname -n`` inside each of ``user``'s Spark worker JVMs' UTS namespaces."""
    pids = os.path.join(space_dir(platform, user), "spark", "pids")
    names = []
    for entry in sorted(os.listdir(pids)):
        if "Worker" not in entry:
            continue
        with open(os.path.join(pids, entry)) as f:
            pid = f.read().strip()
        done = subprocess.run(
            ["nsenter", "--target", pid, "--uts", "uname", "-n"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        names.append(done.stdout.strip())
    return sorted(names)


@pytest.mark.parametrize("engine", ["dask", "spark", "ipyparallel"])
def test_hosts_pop_up_while_a_map_runs_and_the_engine_scales_to_four(platform, engine, tmp_path):
    user = USERS[engine]
    started_user(platform, user, profile=PROFILES[engine], workers=1)
    with lab_page(tmp_path / "browser-home", f"hosts-{engine}-console") as page:
        try:
            scale_during_a_map(platform, page, engine, user)
        except Exception:
            shot(page, f"hosts-{engine}-failure")
            raise


def scale_during_a_map(platform, page, engine: str, user: str) -> None:
    tasks = TASKS[engine]
    panel = open_clusters_sidebar(page, platform, user)
    if engine == "dask":
        panel.get_by_label("Workers of the new cluster").fill("1")
        panel.get_by_role("button", name="New cluster").click()
    card = panel.locator(f".jp-ClusterHub-cluster[data-cluster^='{engine}/']")
    card.and_(page.locator("[data-state=running][data-workers='1']")).wait_for()
    card.locator(".jp-ClusterHub-name").click()  # the hostnames view shows this engine
    view = panel.locator(".jp-ClusterHub-hosts")

    # -- the map starts on one worker -------------------------------------------------------
    open_notebook(page)
    run_cell(page, MAPS[engine].format(tasks=tasks, seconds=SECONDS[engine]), 1)
    page.locator(".jp-OutputArea-output", has_text="STARTED=yes").wait_for()
    page.wait_for_function(
        """() => document.querySelectorAll(
            '#clusterhub-clusters .jp-ClusterHub-host[data-hostname]').length === 1 &&
            Number(document.querySelector('.jp-ClusterHub-count').textContent) > 0"""
    )
    first = shown_hosts(view)
    assert first[0].startswith(f"{user}-"), first
    shot(page, f"hosts-{engine}-1-before-scaling")

    # -- scaled to 4 while it runs: the new hosts appear before the map is done -------------
    card.get_by_label("Workers", exact=True).fill(str(WORKERS))
    card.get_by_role("button", name="Scale").click()
    page.wait_for_function(
        f"""() => document.querySelectorAll(
            '#clusterhub-clusters .jp-ClusterHub-host[data-hostname]').length === {WORKERS}""",
        timeout=240_000,
    )
    assert counted(page) < tasks, "the hosts arrived while the map ran"
    swatches = view.locator(".jp-ClusterHub-host[data-hostname] .jp-ClusterHub-swatch")
    colours = {swatches.nth(i).evaluate("s => s.style.background") for i in range(WORKERS)}
    assert len(colours) == WORKERS, "each host in its own colour"
    shot(page, f"hosts-{engine}-2-hosts-arriving")

    # -- done: every task counted, on the workers' own hostnames ----------------------------
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('.jp-ClusterHub-host .jp-ClusterHub-count')]
            .reduce((sum, c) => sum + Number(c.textContent), 0) === {tasks}""",
        timeout=300_000,
    )
    run_cell(page, UNAMES[engine].format(workers=WORKERS), 2)
    output = page.locator(".jp-OutputArea-output", has_text="UNAMES=").first
    output.wait_for(timeout=300_000)
    unames = json.loads(output.inner_text().split("UNAMES=", 1)[1].strip())
    if engine == "spark":
        # The tasks' own view, and each worker JVM's namespace read from outside: the same.
        assert unames == spark_worker_unames(platform, user)
    assert unames == sorted(f"{user}-{_short(engine)}-{n}" for n in range(1, WORKERS + 1))
    assert shown_hosts(view) == unames
    summary = view.locator(".jp-ClusterHub-summary").inner_text()
    assert summary.startswith(f"{tasks} tasks on {WORKERS} hosts"), summary
    shot(page, f"hosts-{engine}-3-after-scaling")


def _short(engine: str) -> str:
    return {"dask": "dask", "spark": "spark", "ipyparallel": "ipp"}[engine]
