"""One `clusterhub up` per data dir, and taking over from one that died.

`clusterhub up` holds a lock in its data dir for as long as it runs: a second one is refused
with the first one's pid. If the lock is free but the platform's own processes still run (the
hub, its proxy and idle culler, the gateway), the `up` that started them died without
stopping them (SIGKILL, a crash). The next `up` then stops just those, by force so that none
of them cleans up after itself, and starts its own on the same internal ports: attendees'
servers, kernels, engines and clusters were never theirs to stop, and the new hub and
gateway re-attach to them from their databases.

Only processes that carry this platform's marker in their environment are ever signalled, so
a pid reused by another program is left alone.
"""

from __future__ import annotations

import fcntl
import os
import time
from functools import partial

import psutil

from . import procs
from .ports import port_is_free

LOCK_NAME = "up.lock"
# An executable's name -> the platform role of the process running it.
ROLES = {
    "jupyterhub": "hub",
    "configurable-http-proxy": "proxy",
    "dask-gateway-server": "gateway",
    # The gateway's own child, which holds its HTTP and scheduler ports: it notices its
    # parent died only when it next reads, and must not hold those ports meanwhile.
    "dask-gateway-proxy": "gateway-proxy",
}


class InUse(Exception):
    """Another `clusterhub up` runs on this data dir."""

    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"clusterhub up pid {pid}" if pid else "another clusterhub up")


class PlatformLock:
    """Held (an exclusive flock) from :meth:`acquire` until this process exits."""

    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, "run", LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Not inherited by children (Python opens files close-on-exec): the lock goes with
        # this process, whatever it leaves running.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise InUse(int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def platform_role(cmdline: list[str]) -> str | None:
    """Which of the platform's own processes ``cmdline`` runs, if any: "hub", "proxy",
    "gateway", "gateway-proxy" or "culler". Attendees' servers, kernels and engines have
    no role here."""
    for arg in cmdline[:3]:
        role = ROLES.get(os.path.basename(arg))
        if role:
            return role
    if "jupyterhub_idle_culler" in cmdline:
        return "culler"
    return None


def leftovers(data_dir: str, roles: set[str] | None = None) -> list[psutil.Process]:
    """The platform's own processes still running for ``data_dir`` (of ``roles`` only,
    if given)."""
    found = []
    for proc in procs.find_marked(procs.PLATFORM_MARKER, data_dir):
        try:
            role = platform_role(proc.cmdline())
        except psutil.Error:
            continue
        if role and (roles is None or role in roles):
            found.append(proc)
    return found


def listening_addresses(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    """The (ip, port) pairs ``processes`` listen on."""
    addresses = set()
    for proc in processes:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        addresses.update(
            (c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN
        )
    return addresses


def listening_ports(processes: list[psutil.Process]) -> set[int]:
    return {port for _, port in listening_addresses(processes)}


def _exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie: only its exit status is left (its sockets may not be closed yet)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop(
    processes: list[psutil.Process], data_dir: str, timeout: float = 10
) -> set[tuple[str, int]]:
    """SIGKILL, as a crash would (a hub asked to stop would stop every attendee's server);
    wait until the ports they listened on are free; forget the proxy's pid file. Returns the
    addresses still taken after ``timeout`` (empty when all went well).

    The successors bind the same ports, which servers, kernels and clusters were given. A
    process counts as exited once its main thread is a zombie, while its other threads may
    still hold its sockets for a moment; so the ports themselves are waited for.

    The new hub would otherwise find the old proxy's pid in its pid file and, if that
    process is not reaped yet (a zombie until whoever inherited it waits for it: init at
    once, a container's first process perhaps never), give up with "Failed to stop proxy"."""
    addresses = listening_addresses(processes)
    for proc in processes:
        try:
            proc.kill()
        except psutil.Error:
            pass
    deadline = time.monotonic() + timeout
    for proc in processes:
        procs.wait_until(partial(_exited, proc), max(0.0, deadline - time.monotonic()), 0.05)
    taken = set(addresses)

    def all_free() -> bool:
        taken.difference_update({(ip, port) for ip, port in taken if port_is_free(ip, port)})
        return not taken

    procs.wait_until(all_free, max(0.0, deadline - time.monotonic()), 0.05)
    try:
        os.unlink(os.path.join(data_dir, "hub", "proxy.pid"))
    except FileNotFoundError:
        pass
    return taken
