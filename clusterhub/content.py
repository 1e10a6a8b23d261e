"""Workshop content into users' homes: one-way, never clobbering a user's edits.

Like nbgitpuller's merge, but simpler because the source is a directory:

- a file the user does not have arrives;
- a file the user has not touched since we delivered it is updated;
- a file the user edited is kept as it is, and the new version is saved beside
  it as ``<stem>.workshop-update<suffix>``;
- nothing is ever deleted;
- a symbolic link that leads out of the source is refused (named in the report), never
  followed: the repository decides what its files are, not what else is on the machine.

What we delivered is remembered (content hashes) in a manifest outside the home,
so a user cannot break the merge by editing it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field

from .space import read_json, write_json_atomic

# Not workshop content: repository plumbing and environment specs.
IGNORED_NAMES = {".git", ".github", ".ipynb_checkpoints", "__pycache__", ".DS_Store"}
ENVIRONMENT_FILES = {
    "requirements.txt",
    "environment.yml",
    "apt.txt",
    "postBuild",
    "start",
    "runtime.txt",
    "install.R",
    "Project.toml",
    "setup.py",
    "Dockerfile",
}


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def leads_out(path: str, root: str) -> bool:
    """Whether ``path`` is a symbolic link that resolves outside the directory ``root``."""
    if not os.path.islink(path):
        return False
    top, target = os.path.realpath(root), os.path.realpath(path)
    return target != top and not target.startswith(top + os.sep)


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_files(source: str, exclude: tuple[str, ...] = ()):
    for dirpath, dirnames, filenames in os.walk(source):
        top = dirpath == source
        dirnames[:] = sorted(
            d for d in dirnames if d not in IGNORED_NAMES and not (top and d in exclude)
        )
        for name in sorted(filenames):
            if name in IGNORED_NAMES:
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), source)
            if rel in ENVIRONMENT_FILES:
                continue
            yield rel


def _beside(path: str) -> str:
    stem, suffix = os.path.splitext(path)
    return f"{stem}.workshop-update{suffix}"


def sync_content(
    source: str, home: str, manifest_path: str, exclude: tuple[str, ...] = ()
) -> SyncReport:
    """Merge ``source`` into ``home`` one-way; see the module docstring for the rules.

    ``exclude``: top-level folders that are not content (a repository's ``binder/``)."""
    delivered: dict[str, str] = read_json(manifest_path, default={}) or {}
    report = SyncReport()
    for rel in _content_files(source, exclude):
        src = os.path.join(source, rel)
        dst = os.path.join(home, rel)
        if leads_out(src, source):
            report.refused.append(f"{rel} -> {os.readlink(src)}")
            continue
        new_digest = _digest(src)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            shutil.copy2(src, dst)
            delivered[rel] = new_digest
            report.added.append(rel)
            continue
        if not os.path.isfile(dst) or os.path.islink(dst):
            report.kept.append(rel)
            continue
        current = _digest(dst)
        if current == new_digest:
            delivered[rel] = new_digest
            continue
        if delivered.get(rel) == current:
            # Untouched since we delivered it: the update replaces it.
            shutil.copy2(src, dst)
            delivered[rel] = new_digest
            report.updated.append(rel)
        else:
            # The user's version wins; the workshop's new version waits beside it.
            shutil.copy2(src, _beside(dst))
            report.kept.append(rel)
    write_json_atomic(manifest_path, delivered)
    return report


def workshop_source() -> str:
    """The default workshop shipped with clusterhub (``binder/`` in a checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "workshop"),
        os.path.join(os.path.dirname(here), "binder"),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError("the default workshop content (binder/) is missing from this install")
