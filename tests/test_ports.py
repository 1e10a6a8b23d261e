"""Chosen ports stay ours until bound: they come from below the kernel's ephemeral range."""

from __future__ import annotations

import socket

from clusterhub.ports import ephemeral_range, free_port


def test_chosen_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice():
    low, high = ephemeral_range()
    chosen = [free_port() for _ in range(50)]
    assert len(set(chosen)) == 50
    assert all(1024 < port < low for port in chosen)
    # What the kernel gives for port 0 and for outgoing connections never lands there.
    listeners = []
    try:
        for _ in range(50):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            listeners.append(sock)
        assert all(low <= s.getsockname()[1] <= high for s in listeners)
    finally:
        for sock in listeners:
            sock.close()


def test_a_chosen_port_can_be_bound_by_its_component():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert sock.getsockname()[1] == port
