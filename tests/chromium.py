"""The system's Chromium, headless, driven by Playwright (which never downloads a browser
here): one way to start it for every browser test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def chromium(home: Path) -> Iterator[Any]:
    """A Playwright ``Browser`` with its profile under ``home``; closed on the way out."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "needs chromium: apt-get install -y chromium"
    home.mkdir(parents=True, exist_ok=True)
    # Chromium's singleton socket lives in TMPDIR, and a socket path has at most 107 bytes:
    # pytest's own (per-worker) directories are too deep.
    short_tmp = tempfile.mkdtemp(prefix="chr-")
    env = {**os.environ, "HOME": str(home), "TMPDIR": short_tmp}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True, env=env
            )
            try:
                yield browser
            finally:
                browser.close()
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
