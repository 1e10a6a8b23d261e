"""Driving the real JupyterLab page in headless Chromium: log in, open the Clusters sidebar,
type cells into a notebook and run them, take screenshots.

Screenshots go to ``$CLUSTERHUB_TEST_OUTPUT/browser/`` (default: ``test-output/`` in the
checkout, ignored by git) for CI to keep as artifacts.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from chromium import chromium

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Generous: JupyterLab's first load and a cluster start share two cores with the platform.
SLOW = 120_000  # ms


def output_dir() -> str:
    base = os.environ.get("CLUSTERHUB_TEST_OUTPUT") or os.path.join(ROOT, "test-output")
    path = os.path.join(base, "browser")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def lab_page(home, console_name: str = "console") -> Iterator:
    """A Chromium page whose console goes to ``<output>/<console_name>.log`` with the
    screenshots: the first place to look on failure."""
    console_log = os.path.join(output_dir(), f"{console_name}.log")
    with open(console_log, "w") as console, chromium(home) as browser:
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


def open_clusters_sidebar(page, platform, user: str):
    """Log ``user`` in through the hub's form, open JupyterLab and its Clusters sidebar;
    returns the sidebar's panel."""
    page.goto(f"{platform.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", platform.workshop_code)
    with page.expect_navigation():
        page.click("#login_submit")
    page.goto(f"{platform.url}/user/{user}/lab")
    tab = page.locator('.jp-SideBar .lm-TabBar-tab[data-id="clusterhub-clusters"]')
    tab.wait_for()
    tab.click()
    panel = page.locator("#clusterhub-clusters")
    panel.wait_for(state="visible")
    return panel


def open_notebook(page) -> None:
    """A new notebook from the launcher, its kernel answering (see :func:`wait_for_kernel`)."""
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    page.locator(".jp-NotebookPanel .jp-Cell .cm-content").first.wait_for()
    wait_for_kernel(page)


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


def cell_output(page, marker: str) -> str:
    """The text after ``marker`` in the first output that shows it (waits for it)."""
    output = page.locator(".jp-OutputArea-output", has_text=marker).first
    output.wait_for()
    return output.inner_text().split(marker, 1)[1].strip().split()[0]
