"""Finding free TCP ports and telling the user clearly when one is taken."""

from __future__ import annotations

import os
import random
import socket
import time

# Where chosen ports come from when the kernel's ephemeral range leaves room below it.
CHOSEN_PORTS_LOW = 20000
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
# "LOW-HIGH": choose every port from this range instead (firewall rules; or several
# platforms, or test runners, on one machine that must never pick the same port).
PORT_RANGE_ENV = "CLUSTERHUB_PORT_RANGE"
# The longest path a Unix socket may have (sun_path holds 108 bytes with its final NUL).
SOCKET_PATH_MAX = 107
_handed_out: set[int] = set()


def chosen_range() -> tuple[int, int]:
    """The range ports are chosen from: $CLUSTERHUB_PORT_RANGE, else below the ephemeral
    range (empty when there is no room there)."""
    configured = os.environ.get(PORT_RANGE_ENV, "")
    if configured:
        try:
            low, high = (int(x) for x in configured.split("-"))
        except ValueError:
            raise ValueError(
                f"{PORT_RANGE_ENV}: {configured!r} is not LOW-HIGH (ports 1024-65535)"
            ) from None
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"{PORT_RANGE_ENV}: {configured!r} is not within 1024-65535")
        return low, high
    low, _ = ephemeral_range()
    return (CHOSEN_PORTS_LOW, low - 1) if low - CHOSEN_PORTS_LOW >= 1000 else (1, 0)


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out for port 0 and for outgoing connections."""
    try:
        with open(EPHEMERAL_RANGE_FILE) as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now and that no one else is handed meanwhile.

    A port chosen now is often bound much later: the hub, the gateway and its proxy, a
    Spark master all start after their ports are written into settings, and the gateway
    is restarted on the same ports. A port from the kernel's ephemeral range (what port 0
    gives) can be handed to any other program in between, for its own port 0 or as the
    source port of an outgoing connection, and the later bind then fails. So ports are
    chosen below that range, where the kernel never hands one out on its own, and never
    twice by this process.
    """
    low, high = chosen_range()
    if low <= high:
        for _ in range(200):
            port = random.randint(low, high)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    # No room below the ephemeral range: the kernel's choice, free at least now.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    _handed_out.add(port)
    return port


def reserve(port: int) -> None:
    """Never hand out ``port``: one the user named (``--port``), which is free until its
    program binds it, and must not become the hub's or the gateway's meanwhile."""
    _handed_out.add(port)


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (an empty host means all interfaces)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def accepts(host: str, port: int, timeout: float = 1) -> bool:
    """Whether something accepts connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Wait until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepts(host, port):
            return True
        time.sleep(0.1)
    return False
