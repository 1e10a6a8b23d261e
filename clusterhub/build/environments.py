"""Python environments that notebooks and engines run in, and which one is *current*.

Before any ``clusterhub build`` everything runs in the platform's own environment (the one
``clusterhub up`` runs from). A local build makes a new environment under
``<data dir>/environments/<name>/``:

- ``venv/``: the environment (see :mod:`clusterhub.build.local` for how it is made);
- ``repo/``: the repository it was built from, as checked out: the workshop content;
- ``build.json``: where it came from and how the build went; ``"complete": true`` only once
  every step succeeded.

``environments/current.json`` names the current environment. It is replaced atomically
(written beside and renamed) and only after a complete build, so a reader sees either the old
or the new environment, never a half-built one. Spawns read it once and record the
environment in the user's space, so a running user keeps theirs until they restart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..space import read_json, write_json_atomic

ENVIRONMENTS_DIR = "environments"
CURRENT_FILE = "current.json"
BUILD_FILE = "build.json"


@dataclass(frozen=True)
class Environment:
    """Where a space's Python processes come from.

    ``prefix`` is the environment's root (its ``bin/`` holds ``python`` and the console
    scripts); ``content`` the workshop content that came with it (empty: the built-in
    workshop); ``start`` a repository's ``start`` script that wraps the notebook server.
    """

    name: str
    prefix: str
    content: str = ""
    content_exclude: tuple[str, ...] = ()
    start: str = ""

    @property
    def bin(self) -> str:
        return os.path.join(self.prefix, "bin")

    @property
    def python(self) -> str:
        if self.is_platform:
            return sys.executable
        return os.path.join(self.bin, "python")

    @property
    def is_platform(self) -> bool:
        return self.name == "platform"

    def executable(self, name: str) -> str:
        """``name`` (e.g. ``dask``) from this environment, else ``name`` unchanged."""
        path = os.path.join(self.bin, os.path.basename(name))
        return path if os.access(path, os.X_OK) else name

    def rebase_command(self, command: list[str]) -> list[str]:
        """A command whose program is a console script, run from this environment instead."""
        if not command:
            return command
        return [self.executable(command[0]), *command[1:]]

    def process_env(self, path: str | None = None) -> dict[str, str]:
        """``PATH`` and ``VIRTUAL_ENV`` for a process that runs in this environment."""
        path = os.environ.get("PATH", "") if path is None else path
        parts = [p for p in path.split(os.pathsep) if p and p != self.bin]
        return {"PATH": os.pathsep.join([self.bin, *parts]), "VIRTUAL_ENV": self.prefix}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["content_exclude"] = list(self.content_exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Environment:
        return cls(
            name=str(data["name"]),
            prefix=str(data["prefix"]),
            content=str(data.get("content") or ""),
            content_exclude=tuple(data.get("content_exclude") or ()),
            start=str(data.get("start") or ""),
        )


def platform_environment() -> Environment:
    """The environment the platform itself runs in (the one before any build)."""
    return Environment(name="platform", prefix=os.path.dirname(os.path.dirname(sys.executable)))


def environments_dir(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), ENVIRONMENTS_DIR)


def current_environment(data_dir: str) -> Environment | None:
    """The environment of the last complete build, or None before the first."""
    data = read_json(os.path.join(environments_dir(data_dir), CURRENT_FILE))
    if not data:
        return None
    environment = Environment.from_dict(data)
    # A pointer to an environment that was deleted by hand would break every spawn.
    if not os.access(environment.python, os.X_OK):
        return None
    return environment


def set_current(data_dir: str, environment: Environment) -> None:
    write_json_atomic(
        os.path.join(environments_dir(data_dir), CURRENT_FILE), environment.to_dict(), mode=0o644
    )


def is_complete(env_root: str) -> bool:
    return bool((read_json(os.path.join(env_root, BUILD_FILE), default={}) or {}).get("complete"))


def next_name(data_dir: str) -> str:
    """``build-N``, one more than any environment there is (complete or not)."""
    numbers = [0]
    root = environments_dir(data_dir)
    for entry in os.listdir(root) if os.path.isdir(root) else []:
        if entry.startswith("build-") and entry[len("build-") :].isdigit():
            numbers.append(int(entry[len("build-") :]))
    return f"build-{max(numbers) + 1}"


def remove_incomplete(data_dir: str) -> list[str]:
    """Delete what an interrupted build left (no ``complete`` mark); returns their names.

    Only called with the build lock held, so no build is writing there."""
    removed = []
    root = environments_dir(data_dir)
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, entry)
        if entry.startswith("build-") and os.path.isdir(path) and not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry)
    return removed


class BuildLocked(RuntimeError):
    """Another build of the same data dir is running."""


@contextmanager
def build_lock(data_dir: str) -> Iterator[None]:
    """One build at a time per data dir (an exclusive lock on ``environments/.lock``)."""
    root = environments_dir(data_dir)
    os.makedirs(root, exist_ok=True)
    fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildLocked(
                f"another clusterhub build is running on {data_dir}; wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)
