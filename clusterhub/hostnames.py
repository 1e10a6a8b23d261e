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

A worker whose peers must reach it by its name (Spark's: an executor is known by its
worker's host) also gets a mount namespace in which ``/etc/hosts`` is the machine's plus the
space's worker names, at 127.0.0.1, as a cluster's DNS would name its nodes; its driver
gets the same file, keeping the machine's hostname. Every other name resolves as before.

Run as ``python -m clusterhub.hostnames NAME [--hosts FILE] -- COMMAND...`` to exec
``COMMAND`` as host ``NAME`` (``-``: the machine's), with ``FILE`` as its ``/etc/hosts``, or,
if that is refused, as it is, saying why on standard error.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

CLONE_NEWNS = 0x00020000
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


MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
HOSTS = "/etc/hosts"


def hosts_text(names: list[str], address: str = "127.0.0.1", machine_hosts: str = HOSTS) -> str:
    """The machine's hosts file with ``names`` added at ``address``: what a worker (and its
    driver) resolves, so that every other name still resolves as on the machine."""
    try:
        with open(machine_hosts) as f:
            base = f.read()
    except OSError:
        base = "127.0.0.1 localhost\n"
    if base and not base.endswith("\n"):
        base += "\n"
    return (
        base
        + "# the space's workers, each a host of its own (clusterhub)\n"
        + "".join(f"{address} {name}\n" for name in names)
    )


def _libc_call(libc, name: str, *args) -> None:
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def enter_own_host(hostname: str | None, hosts_file: str | None = None) -> None:
    """Move this process into new namespaces that its children inherit: a UTS namespace
    called ``hostname`` (None: keep the machine's) and, with ``hosts_file``, a mount
    namespace in which that file is ``/etc/hosts`` (the machine's own is untouched: the
    new namespace's mounts are private first). As root, before the process becomes its
    user; otherwise inside a user namespace of its own (needs a single-threaded process).
    Raises OSError when this is not allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = (CLONE_NEWUTS if hostname else 0) | (CLONE_NEWNS if hosts_file else 0)
    if not flags:
        return
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    _libc_call(libc, "unshare", flags)
    if flags & CLONE_NEWUSER:
        # Only ourselves, as ourselves: setgroups must be denied before an unprivileged
        # process may write its gid map.
        for name, line in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as f:
                f.write(line)
    if hosts_file:
        # Private before anything is mounted: a shared / would carry the mount back out.
        _libc_call(libc, "mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
        source = os.path.realpath(hosts_file).encode()
        _libc_call(libc, "mount", source, os.path.realpath(HOSTS).encode(), None, MS_BIND, None)
    if hostname:
        name = hostname.encode()
        if libc.sethostname(name, len(name)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"sethostname({hostname!r}): {os.strerror(errno)}")


def launcher(python: str, hostname: str | None, hosts_file: str | None = None) -> list[str]:
    """The command prefix that runs what follows it through :func:`main`."""
    return [
        python,
        "-m",
        "clusterhub.hostnames",
        hostname or "-",
        *(["--hosts", hosts_file] if hosts_file else []),
        "--",
    ]


def main(argv: list[str]) -> None:
    usage = "usage: python -m clusterhub.hostnames NAME|- [--hosts FILE] -- COMMAND..."
    if "--" not in argv:
        sys.exit(usage)
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    hosts_file = None
    if len(options) == 3 and options[1] == "--hosts":
        hosts_file = options[2]
    elif len(options) != 1:
        sys.exit(usage)
    if not command:
        sys.exit(usage)
    hostname = None if options[0] == "-" else options[0]
    try:
        enter_own_host(hostname, hosts_file)
    except OSError as exc:
        print(f"clusterhub: {command[0]} keeps the machine's hostname: {exc}", file=sys.stderr)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
