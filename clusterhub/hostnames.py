"""Each worker a host of its own on one machine: its own UTS namespace and hostname.

On one machine every worker shares the machine's hostname, so "which host ran each task"
shows one bar. As root, each worker process of a space can instead get a UTS namespace of its
own (only the hostname differs: network, files and processes stay the machine's) named after
what it is, ``alice-dask-3``: the hostnames view then shows hosts popping up as a cluster
scales, as on a real cluster. Without root this is not possible, and workers are shown by
name instead (see ``clusterhub.labextension.task_places``).
"""

from __future__ import annotations

import ctypes
import os
import re

CLONE_NEWUTS = 0x04000000
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
    """Move this process into a new UTS namespace called ``hostname`` (needs root: call
    before the process becomes its user). Its children inherit both."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWUTS): {os.strerror(errno)}")
    name = hostname.encode()
    if libc.sethostname(name, len(name)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sethostname({hostname!r}): {os.strerror(errno)}")
