"""Where a build's repository comes from: a local directory or a Git URL, at a ref.

:func:`check_source` runs before anything is written (a bad SOURCE or --ref changes
nothing); :func:`fetch_source` puts the files into the new environment's ``repo/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .steps import BuildError, Progress

STEP = "fetch the repository"
GIT_PREFIXES = ("http://", "https://", "git://", "ssh://", "file://", "git@")


class SourceError(ValueError):
    """SOURCE or --ref cannot be used; the message names the flag."""


@dataclass(frozen=True)
class Source:
    location: str  # an absolute path, or a URL
    ref: str = ""
    is_git: bool = False

    def describe(self) -> str:
        return f"{self.location}" + (f" at {self.ref}" if self.ref else "")


def _is_bare_repository(path: str) -> bool:
    return all(os.path.exists(os.path.join(path, p)) for p in ("HEAD", "objects", "refs"))


def check_source(location: str, ref: str = "") -> Source:
    if not location:
        raise SourceError("SOURCE: give a local directory or a Git URL")
    if ref and (ref.startswith("-") or any(c.isspace() for c in ref)):
        raise SourceError(f"--ref: {ref!r} is not a Git branch, tag or commit")
    if location.startswith(GIT_PREFIXES):
        return Source(location, ref, is_git=True)
    path = os.path.abspath(os.path.expanduser(location))
    if not os.path.isdir(path):
        raise SourceError(f"SOURCE: {location} is neither a directory nor a Git URL")
    if _is_bare_repository(path) or os.path.exists(os.path.join(path, ".git")):
        # A working tree without --ref is taken as it is, uncommitted changes included,
        # as repo2docker does; with --ref it is cloned at that ref.
        return Source(path, ref, is_git=bool(ref) or _is_bare_repository(path))
    if ref:
        raise SourceError(f"--ref: {location} is not a Git repository, so it has no refs")
    return Source(path)


def _git_env() -> dict[str, str]:
    # Never wait for a password prompt: a private URL fails at once with git's message.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


def fetch_source(source: Source, dest: str, progress: Progress) -> str:
    """Put the repository's files into ``dest``; returns the commit (or empty for a plain
    directory)."""
    if not source.is_git:
        shutil.copytree(
            source.location,
            dest,
            symlinks=True,
            ignore=shutil.ignore_patterns(".git"),
        )
        return ""
    progress.run(
        ["git", "clone", "--quiet", "--no-checkout", source.location, dest],
        what=f"git clone {source.location}",
        env=_git_env(),
        timeout=600,
    )
    ref = source.ref or "HEAD"
    commit = ""
    # A branch that exists only on the remote: clone made it origin/<branch>.
    for name in (ref, f"origin/{ref}"):
        try:
            commit = progress.run(
                ["git", "-C", dest, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"],
                what="rev-parse",
                env=_git_env(),
            ).strip()
            break
        except BuildError:
            continue
    if not commit:
        raise BuildError(
            STEP, f"--ref {source.ref!r} is not a branch, tag or commit of {source.location}"
        )
    progress.run(
        ["git", "-C", dest, "-c", "advice.detachedHead=false", "checkout", "--quiet", commit],
        what=f"git checkout {ref}",
        env=_git_env(),
    )
    # The environment keeps the files, not the history.
    shutil.rmtree(os.path.join(dest, ".git"), ignore_errors=True)
    return commit


def git_available() -> bool:
    try:
        subprocess.run(["git", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True
