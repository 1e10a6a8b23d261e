"""The Clusters sidebar and widget in a real JupyterLab page, in headless Chromium.

The whole platform runs (`clusterhub up`); a user's server is spawned with the Dask
profile and the system chromium, driven by Playwright, logs in through the hub's form,
opens JupyterLab, opens the Clusters sidebar, starts a Dask cluster with 1 worker,
scales it to 3 with the sidebar's control and sees the workers arrive. A notebook typed
into the page maps ``socket.gethostname`` over the cluster; the sidebar then shows each
worker with its number of tasks: here the workers share the machine's hostname (as when
the platform is not root), so the view names each worker, labelled as a worker. The
notebook widget renders in the same page, lists the same cluster and scales it to 2.

Screenshots go where :mod:`labpage` says.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
from hubclient import BrowserUser, running_platform
from labpage import lab_page, open_clusters_sidebar, open_notebook, run_cell, shot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USER = "grace"
TASKS = 300

MAP_CELL = f"""\
import json, socket
from dask_gateway import Gateway
from distributed import get_worker

gateway = Gateway()
cluster = gateway.connect(gateway.list_clusters()[0].name)
client = cluster.get_client()
where = lambda i: (socket.gethostname(), get_worker().address)
ran = client.gather(client.map(where, range({TASKS}), pure=False))
hosts, workers = sorted({{h for h, _ in ran}}), sorted({{w for _, w in ran}})
print("HOSTS=" + json.dumps(hosts), "WORKERS=" + json.dumps(workers))
"""

WIDGET_CELL = """\
from clusterhub import ClustersWidget

ClustersWidget()
"""


# Workers that share the machine's hostname, as they do when the platform is not root (or
# the kernel refuses namespaces): through the organiser's --config file, which the gateway
# loads too. Hosts of their own are tests/test_browser_hosts.py's.
SHARED_HOSTNAME_CONFIG = "c.LocalSpaceBackend.worker_hostnames = False\n"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    config = root / "shared_hostname_config.py"
    config.write_text(SHARED_HOSTNAME_CONFIG)
    os.chmod(root, 0o755)  # the hub and the gateway read it (as root, but say so plainly)
    with running_platform(str(root), extra_args=["--config", str(config)]) as running:
        yield running


@pytest.fixture(scope="module")
def user(platform):
    user = BrowserUser(platform, USER)
    user.login().raise_for_status()
    response = user.spawn(profile="dask")
    assert response.status_code == 302, response.text[:2000]
    user.wait_ready()
    return user


@pytest.fixture
def page(platform, tmp_path):
    with lab_page(tmp_path / "browser-home") as page:
        yield page


def test_sidebar_scales_a_cluster_and_shows_task_hostnames_and_the_widget_scales(
    platform, user, page
):
    try:
        run_the_page(platform, page)
    except Exception:
        shot(page, "failure")
        raise


def run_the_page(platform, page) -> None:
    # -- log in through the hub's form, land in JupyterLab's Clusters sidebar ---------------
    panel = open_clusters_sidebar(page, platform, USER)

    # -- the sidebar: a new cluster with 1 worker ------------------------------------------
    panel.get_by_text("No clusters yet").wait_for()
    panel.get_by_label("Workers of the new cluster").fill("1")
    panel.get_by_role("button", name="New cluster").click()
    card = panel.locator(".jp-ClusterHub-cluster[data-state=running]")
    card.and_(page.locator("[data-workers='1']")).wait_for()
    assert card.count() == 1
    assert "1 worker" in card.locator(".jp-ClusterHub-stats").inner_text()
    shot(page, "1-new-cluster")

    # -- scale to 3 with the control; the workers appear ------------------------------------
    card.get_by_label("Workers", exact=True).fill("3")
    card.get_by_role("button", name="Scale").click()
    card.and_(page.locator("[data-workers='3']")).wait_for()
    assert card.locator(".jp-ClusterHub-stats").inner_text().startswith("3 workers · 3 cores")
    assert not panel.locator(".jp-ClusterHub-error").is_visible()
    shot(page, "2-scaled-to-3")
    hosts_view = panel.locator(".jp-ClusterHub-hosts")
    hosts_view.get_by_text("No tasks yet").wait_for()

    # -- a notebook maps socket.gethostname over the cluster --------------------------------
    open_notebook(page)
    run_cell(page, MAP_CELL, 1)
    output = page.locator(".jp-OutputArea-output", has_text="HOSTS=")
    output.wait_for()
    # JupyterLab has been up for a while: it never asked about Jupyter news.
    assert page.get_by_text("official Jupyter news").count() == 0
    line = output.inner_text().strip()
    kernel_hosts = json.loads(line.split("HOSTS=", 1)[1].split(" WORKERS=")[0])
    worker_addresses = json.loads(line.split("WORKERS=", 1)[1])
    kernel_workers = len(worker_addresses)
    # The workers share the machine's hostname: the view places each task on its worker
    # (its address), labelled as a worker, never one bar for the machine.
    assert kernel_hosts == [socket.gethostname()], "worker_hostnames is off, from --config"
    kernel_hosts = sorted(address.split("://", 1)[1] for address in worker_addresses)

    # The sidebar shows exactly those hosts (or workers), every task counted on one of them.
    for hostname in kernel_hosts:
        hosts_view.locator(f".jp-ClusterHub-host[data-hostname='{hostname}']").wait_for()
    page.wait_for_function(
        """(expected) => {
            const counts = document.querySelectorAll('.jp-ClusterHub-host .jp-ClusterHub-count');
            return [...counts].reduce((sum, c) => sum + Number(c.textContent), 0) === expected;
        }""",
        arg=TASKS,
    )
    shown = hosts_view.locator(".jp-ClusterHub-host[data-hostname]")
    assert sorted(shown.nth(i).get_attribute("data-hostname") for i in range(shown.count())) == (
        kernel_hosts
    )
    summary = hosts_view.locator(".jp-ClusterHub-summary").inner_text()
    assert summary.startswith(f"{TASKS} tasks on {kernel_workers} worker"), summary
    assert "share this machine" in summary, summary
    assert hosts_view.locator("th", has_text="worker").count() == 1
    assert hosts_view.locator(".jp-ClusterHub-recent tbody tr").count() > 0
    shot(page, "3-hostnames")

    # -- the widget renders in the notebook and scales the same cluster ---------------------
    run_cell(page, WIDGET_CELL, 2)
    widget = page.locator(".clusterhub-widget")
    widget.wait_for()
    row = widget.locator(".clusterhub-cluster")
    row.locator(".clusterhub-summary-line[data-workers='3']").wait_for()
    for hostname in kernel_hosts:
        widget.locator(f".clusterhub-host[data-hostname='{hostname}']").wait_for()
    workers = row.locator("input[type=number]").first
    workers.fill("2")
    workers.press("Enter")
    row.get_by_role("button", name="Scale").click()
    row.locator(".clusterhub-summary-line[data-workers='2']").wait_for()
    # The sidebar sees the change the widget made: both drive the same clusters.
    card.and_(page.locator("[data-workers='2']")).wait_for()
    assert not widget.locator(".clusterhub-error [role=alert]").count()
    shot(page, "4-widget-scaled-to-2")

    # -- a refused change is shown, not swallowed -------------------------------------------
    card.get_by_label("Workers", exact=True).fill("999")
    card.get_by_role("button", name="Scale").click()
    alert = panel.locator(".jp-ClusterHub-error[role=alert]")
    alert.wait_for()
    assert "workers" in alert.inner_text()
    shot(page, "5-refusal-shown")
    assert card.get_attribute("data-workers") == "2", "a refused scale changed nothing"
