"""Each worker a host of its own on one machine: its own UTS namespace and hostname.

On one machine every worker shares the machine's hostname, so "which host ran each task"
shows one bar. As root, each worker process of a space can instead get a UTS namespace of its
own (only the hostname differs: network, files and processes stay the machine's) named after
what it is, ``alice-dask-3``: the hostnames view then shows hosts popping up as a cluster
scales, as on a real cluster.

A process that is not root (an attendee's IPyParallel engine, started from their own server)
gets one too where the kernel lets users make user namespaces: a user namespace that maps
the process's own uid and gid to themselves and nothing else, owning the new UTS namespace.
Its uid, files and permissions are the same inside as out; after the ``exec`` it keeps no
capability. Where neither works, workers are shown by name instead (see
``clusterhub.labextension.task_places``).

Run as ``python -m clusterhub.hostnames NAME -- COMMAND...`` to exec ``COMMAND`` as host
``NAME`` (or, if that is refused, as it is, saying why on standard error).
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
HOSTNAME_MAX = 63  # a DNS label, and below the kernel's 64


def worker_hostname(space_name: str, engine: str, number: int) -> str:
    """``<space>-<engine>-<number>`` as a valid hostname (a DNS label, lower case)."""
    suffix = f"-{engine}-{number}"
    base = re.sub(r"[^a-z0-9-]+", "-", space_name.lower()).strip("-") or "user"
    return base[: HOSTNAME_MAX - len(suffix)].rstrip("-") + suffix


def can_have_own_hostnames() -> bool:
    """Whether this process may give its children UTS namespaces (root, on Linux)."""
    return os.geteuid() == 0 and os.path.exists("/proc/self/ns/uts")


def enter_own_uts(hostname: str) -> None:
    """Move this process into a new UTS namespace called ``hostname``; its children inherit
    it. As root, before the process becomes its user; otherwise inside a user namespace of
    its own (needs a single-threaded process). Raises OSError when neither is allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUTS if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWUTS
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare: {os.strerror(errno)}")
    if flags & CLONE_NEWUSER:
        # Only ourselves, as ourselves: setgroups must be denied before an unprivileged
        # process may write its gid map.
        for name, line in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as f:
                f.write(line)
    name = hostname.encode()
    if libc.sethostname(name, len(name)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sethostname({hostname!r}): {os.strerror(errno)}")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m clusterhub.hostnames NAME -- COMMAND...")
    hostname, command = argv[0], argv[2:]
    try:
        enter_own_uts(hostname)
    except OSError as exc:
        print(f"clusterhub: {command[0]} keeps the machine's hostname: {exc}", file=sys.stderr)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
