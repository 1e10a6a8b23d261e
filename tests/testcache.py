"""Downloads and builds the tests keep between runs (a Debian root file system, the images'
wheelhouse, tool binaries), in the user's cache directory: a fresh clone, with a fresh
virtual environment, reuses them instead of fetching and building them again. Each user of
the cache checks what it finds (age, completeness) before using it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(part: str) -> Path:
    """``$XDG_CACHE_HOME/clusterhub-tests/<part>`` (default ``~/.cache/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "clusterhub-tests" / part
