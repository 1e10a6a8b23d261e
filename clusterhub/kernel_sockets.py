"""Kernels talk to their notebook server over Unix sockets, not loopback TCP ports.

Why: jupyter_client chooses a kernel's five TCP ports by binding port 0 and letting go;
the kernel binds them a moment later. When a room of notebook servers starts kernels at
once, another server's kernel can take one of those ports in between, and the kernel dies
with ``Address already in use`` (jupyter_client only guards against its own process). Its
IPC transport names each socket after the kernel's unique id instead: nothing to race for,
and only the owner's account may open them (their directory is 0700), where any local user
could connect to a TCP port.

A Unix socket's path has at most 107 bytes, and jupyter_client puts a kernel's sockets
beside its connection file, ``<runtime dir>/kernel-<uuid>-ipc-<n>``: the notebook server's
runtime directory must be short, so each space gets one under a short root of the platform
(``/run/clusterhub/<platform id>/`` as root). Where none is short enough, kernels keep TCP
and the hub logs why.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from .ports import SOCKET_PATH_MAX

# "kernel-" + a uuid + "-ipc-" + a channel number (jupyter_client counts up from 1).
KERNEL_SOCKET_NAME_MAX = len("kernel-") + 36 + len("-ipc-") + 5
RUN_ROOT = "/run/clusterhub"


def runtime_root(platform_id: str) -> str:
    """The short directory under which this platform's spaces get their runtime directory.

    As root, in ``/run`` (memory, emptied at boot); otherwise the session's
    ``$XDG_RUNTIME_DIR``, else a directory of this account's in the system's ``/tmp``.
    """
    if os.geteuid() == 0:
        return os.path.join(RUN_ROOT, platform_id)
    session = os.environ.get("XDG_RUNTIME_DIR")
    if session and os.path.isdir(session):
        return os.path.join(session, f"clusterhub-{platform_id}")
    # Not tempfile.gettempdir(): $TMPDIR is often long, and the point is a short path.
    return os.path.join("/tmp", f"clusterhub-{os.geteuid()}-{platform_id}")


def space_runtime_dir(root: str, space_name: str) -> str:
    """A space's runtime directory: a hash of its name (safe names can be long)."""
    return os.path.join(root, hashlib.sha256(space_name.encode()).hexdigest()[:12])


def too_long_reason(runtime_dir: str) -> str | None:
    """Why kernels could not use IPC sockets in ``runtime_dir`` (None: they can)."""
    longest = len(os.fsencode(runtime_dir)) + 1 + KERNEL_SOCKET_NAME_MAX
    if longest <= SOCKET_PATH_MAX:
        return None
    return (
        f"the kernel socket path under {runtime_dir} would be {longest} bytes, over the "
        f"{SOCKET_PATH_MAX} a Unix socket allows"
    )


def make_root(root: str) -> None:
    """Make the platform's runtime root (and ``/run/clusterhub`` above it) passable for
    attendees' accounts, but not listable, whatever the umask."""
    parent = os.path.dirname(root)
    for path in ((parent,) if parent == RUN_ROOT else ()) + (root,):
        os.makedirs(path, mode=0o711, exist_ok=True)
        os.chmod(path, 0o711)


def prepare(runtime_dir: str, uid: int | None, gid: int | None) -> None:
    """Make ``runtime_dir`` afresh, private to ``uid`` (None: this account), under a root
    others may pass through but not list."""
    make_root(os.path.dirname(runtime_dir))
    remove(runtime_dir)
    os.mkdir(runtime_dir, 0o700)
    if uid is not None:
        os.chown(runtime_dir, uid, gid if gid is not None else -1, follow_symlinks=False)


def remove(runtime_dir: str) -> None:
    shutil.rmtree(runtime_dir, ignore_errors=True)


def remove_root(root: str) -> None:
    """At the platform's end: every space's runtime directory, then the root itself."""
    shutil.rmtree(root, ignore_errors=True)
    parent = os.path.dirname(root)
    if parent == RUN_ROOT:
        try:
            os.rmdir(parent)  # only if no other platform on this machine uses it
        except OSError:
            pass
