"""A user's *space* on one machine: their home, their engines' runtime files, their processes.

On Kubernetes a space is a namespace; locally it is two directories under the
platform's data dir:

- ``homes/<safe name>/``: the user's files (notebooks). Never deleted by us.
- ``spaces/<safe name>/``: runtime state of the user's engines (pid files,
  logs, connection files, ``space.json``). Rewritten on every start.

With per-user accounts (the platform runs as root, see :mod:`clusterhub.accounts`) the
home is the account's (0700). The space directory stays the platform's, readable by the
account's group only: ``space.json`` (the profile's limits, whether the server runs) is the
platform's record, which the user must not rewrite. Each of :data:`OWNER_DIRS` below it is
the account's, for the files its own processes write (engine state, logs, connection
files); the platform's processes never write into those.

Every process of the space carries ``CLUSTERHUB_SPACE=<space dir>`` in its
environment, which is how stop() finds the last of them.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from dataclasses import dataclass
from typing import Any

import escapism

from . import procs

_SAFE_CHARS = set(string.ascii_lowercase + string.digits)
# Directories of a space that belong to its owner (their processes write there).
OWNER_DIRS = ("ipython", "ipyparallel", "spark", "content")


def safe_name(username: str) -> str:
    """A filesystem-safe, collision-free directory name for a user (``a.b`` != ``a-b``)."""
    if not username:
        raise ValueError("username: must not be empty")
    return escapism.escape(username, safe=_SAFE_CHARS, escape_char="-")


def write_json_atomic(path: str, data: Any, mode: int = 0o600) -> None:
    """Write JSON so that a reader never sees half a file (``mode``: the file's permissions)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


@dataclass(frozen=True)
class LocalSpace:
    """Paths and state of one user's space under a platform data dir."""

    data_dir: str
    username: str

    @property
    def name(self) -> str:
        return safe_name(self.username)

    @property
    def home(self) -> str:
        return os.path.join(self.data_dir, "homes", self.name)

    @property
    def root(self) -> str:
        return os.path.join(self.data_dir, "spaces", self.name)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def state_file(self) -> str:
        return self.path("space.json")

    def marker_env(self) -> dict[str, str]:
        """The environment markers every process of this space carries."""
        return {
            procs.PLATFORM_MARKER: os.path.abspath(self.data_dir),
            procs.SPACE_MARKER: os.path.abspath(self.root),
        }

    def create(self, account=None) -> None:
        """Make the home and the space; with an :class:`~clusterhub.accounts.Account`, give
        the home and the owner's directories to it (taking over files left by the
        single-account mode) and fence the rest of the space off from other users."""
        for parent in (os.path.dirname(self.home), os.path.dirname(self.root)):
            os.makedirs(parent, exist_ok=True)
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        for sub in OWNER_DIRS:
            os.makedirs(self.path(sub), exist_ok=True)
        if account is None:
            return
        from .accounts import give_tree

        for parent in (os.path.dirname(self.home), os.path.dirname(self.root)):
            # Others may pass through to their own entry, but not list who else is here.
            os.chmod(parent, 0o711)
        give_tree(self.home, account, mode=0o700)
        os.chown(self.root, 0, account.gid, follow_symlinks=False)
        os.chmod(self.root, 0o750)
        for sub in OWNER_DIRS:
            give_tree(self.path(sub), account, mode=0o700)

    def read_state(self) -> dict[str, Any]:
        return read_json(self.state_file, default={}) or {}

    def write_state(self, **changes: Any) -> dict[str, Any]:
        state = self.read_state()
        state.update(changes)
        state["username"] = self.username
        # Readable by whoever may enter the space (its owner), written by the platform only.
        write_json_atomic(self.state_file, state, mode=0o644)
        return state

    def environment(self):
        """The Python environment this space's processes run in: the one recorded at the last
        spawn (see :mod:`clusterhub.build.environments`), else the platform's own."""
        from .build.environments import Environment, platform_environment

        recorded = self.read_state().get("environment")
        return Environment.from_dict(recorded) if recorded else platform_environment()

    def is_active(self) -> bool:
        """Whether the user's server is running (the gateway reaps clusters of inactive spaces)."""
        return bool(self.read_state().get("active"))

    def processes(self) -> list:
        root = os.path.abspath(self.root)
        return procs.find_marked(procs.SPACE_MARKER, root, cwd_under=root)

    def sweep(self, uid: int | None = None) -> int:
        """Stop every remaining process of this space; returns how many were found.

        With ``uid``, only processes running as that account: with per-user accounts a
        marker is only a hint (anyone can set an environment variable), the uid is not.
        """
        root = os.path.abspath(self.root)
        return procs.sweep(procs.SPACE_MARKER, root, cwd_under=root, uid=uid)


def space_from_env(environ: dict[str, str] | None = None) -> LocalSpace | None:
    """The space a process runs in (a notebook server or kernel), from its environment."""
    environ = os.environ if environ is None else environ
    root = environ.get(procs.SPACE_MARKER)
    if not root:
        return None
    state = read_json(os.path.join(root, "space.json"), default={}) or {}
    data_dir = os.path.dirname(os.path.dirname(root))
    username = state.get("username")
    if not username:
        return None
    return LocalSpace(data_dir=data_dir, username=username)
