"""Downloads and builds the tests keep between runs (a Debian root file system, the images'
wheelhouse, tool binaries), in the user's cache directory: a fresh clone, with a fresh
virtual environment, reuses them instead of fetching and building them again. Each user of
the cache checks what it finds (age, completeness) before using it."""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def cache_dir(part: str) -> Path:
    """``$XDG_CACHE_HOME/clusterhub-tests/<part>``, by default in the account's own
    ``~/.cache`` (from the password database: tests that give a platform a HOME of its own
    must not move the cache, nor lengthen the socket paths of a daemon kept there)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        pwd.getpwuid(os.getuid()).pw_dir, ".cache"
    )
    return Path(root) / "clusterhub-tests" / part
