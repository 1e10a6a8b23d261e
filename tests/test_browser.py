"""The Clusters sidebar and widget in a real JupyterLab page, in headless Chromium.

The whole platform runs (`clusterhub up`); a user's server is spawned with the Dask
profile and the system chromium, driven by Playwright, logs in through the hub's form,
opens JupyterLab, opens the Clusters sidebar, starts a Dask cluster with 1 worker,
scales it to 3 with the sidebar's control and sees the workers arrive. A notebook typed
into the page maps ``socket.gethostname`` over the cluster; the sidebar then shows each
hostname the kernel saw, with its number of tasks. The notebook widget renders in the
same page, lists the same cluster and scales it to 2.

Screenshots go to ``$CLUSTERHUB_TEST_OUTPUT/browser/`` (default: ``test-output/`` in
the checkout, ignored by git) for CI to keep as artifacts.
"""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
from chromium import chromium
from hubclient import BrowserUser, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = "grace"
TASKS = 300
# Generous: JupyterLab's first load and a cluster start share two cores with the platform.
SLOW = 120_000  # ms

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


def output_dir() -> str:
    base = os.environ.get("CLUSTERHUB_TEST_OUTPUT") or os.path.join(ROOT, "test-output")
    path = os.path.join(base, "browser")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(str(tmp_path_factory.mktemp("platform"))) as running:
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
    # The page's console goes with the screenshots: the first place to look on failure.
    console_log = os.path.join(output_dir(), "console.log")
    with open(console_log, "w") as console, chromium(tmp_path / "browser-home") as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(SLOW)
        page.on("console", lambda m: console.write(f"{m.type}: {m.text}\n"))
        page.on("pageerror", lambda e: console.write(f"pageerror: {e}\n"))
        yield page


def shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(output_dir(), f"{name}.png"), full_page=True)


def expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def wait_for_kernel(page) -> None:
    """Run ``1 + 1`` in the first cell until the kernel answers, then open a cell below.

    A new notebook's first run can be lost while JupyterLab is still connecting the
    session's kernel (its status may show idle already); rerunning ``1 + 1`` is harmless."""
    prompt = page.locator(".jp-NotebookPanel .jp-InputPrompt").first
    page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first.click()
    page.keyboard.insert_text("1 + 1")
    for _attempt in range(6):
        page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first.click()
        page.keyboard.press("Control+Enter")
        try:
            expect(prompt).to_have_text(re.compile(r"\[\d+\]:"), timeout=10_000)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("the notebook's kernel never ran a cell")
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, selected
    page.keyboard.press("Enter")


def run_cell(page, code: str, cell: int) -> None:
    """Type ``code`` into the notebook's last cell (number ``cell``) and run it (Shift+Enter)."""
    editor = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").last
    editor.click()
    # insert_text types no keys one by one: the editor adds no brackets or indentation.
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    # The cell was sent to the kernel once its prompt shows [*] or a number.
    prompt = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt").nth(cell)
    expect(prompt).to_have_text(re.compile(r"\[(\*|\d+)\]:"), timeout=30_000)


def test_sidebar_scales_a_cluster_and_shows_task_hostnames_and_the_widget_scales(
    platform, user, page
):
    try:
        run_the_page(platform, page)
    except Exception:
        shot(page, "failure")
        raise


def run_the_page(platform, page) -> None:
    # -- log in through the hub's form, land in JupyterLab ---------------------------------
    page.goto(f"{platform.url}/hub/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", platform.workshop_code)
    with page.expect_navigation():
        page.click("#login_submit")
    page.goto(f"{platform.url}/user/{USER}/lab")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="clusterhub-clusters"]')
    tab.wait_for()

    # -- the sidebar: a new cluster with 1 worker ------------------------------------------
    tab.click()
    panel = page.locator("#clusterhub-clusters")
    panel.wait_for(state="visible")
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
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first.wait_for()
    wait_for_kernel(page)
    run_cell(page, MAP_CELL, 1)
    output = page.locator(".jp-OutputArea-output", has_text="HOSTS=")
    output.wait_for()
    # JupyterLab has been up for a while: it never asked about Jupyter news.
    assert page.get_by_text("official Jupyter news").count() == 0
    line = output.inner_text().strip()
    kernel_hosts = json.loads(line.split("HOSTS=", 1)[1].split(" WORKERS=")[0])
    worker_addresses = json.loads(line.split("WORKERS=", 1)[1])
    kernel_workers = len(worker_addresses)
    # On one machine the workers share its hostname: the view places each task on its
    # worker (its address), labelled as a worker. With hosts of their own, on its host.
    by_worker = kernel_hosts == [socket.gethostname()]
    if by_worker:
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
    if by_worker:
        assert summary.startswith(f"{TASKS} tasks on {kernel_workers} worker"), summary
        assert "share this machine" in summary, summary
        assert hosts_view.locator("th", has_text="worker").count() == 1
    else:
        assert summary.startswith(f"{TASKS} tasks on {len(kernel_hosts)} host"), summary
        many = "s" * (kernel_workers > 1)
        assert summary.endswith(f"run by {kernel_workers} worker{many}"), summary
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
