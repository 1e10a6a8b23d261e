"""Chosen ports stay ours until bound: they come from below the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest

from clusterhub.ports import PORT_RANGE_ENV, chosen_range, ephemeral_range, free_port


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


def test_a_configured_range_is_where_every_port_comes_from(monkeypatch):
    monkeypatch.setenv(PORT_RANGE_ENV, "21000-21049")
    chosen = {free_port() for _ in range(20)}
    assert len(chosen) == 20 and all(21000 <= port <= 21049 for port in chosen)
    monkeypatch.setenv(PORT_RANGE_ENV, "80-90")
    with pytest.raises(ValueError, match="CLUSTERHUB_PORT_RANGE: '80-90' is not within 1024-65535"):
        chosen_range()
    monkeypatch.setenv(PORT_RANGE_ENV, "lots")
    with pytest.raises(ValueError, match="is not LOW-HIGH"):
        chosen_range()


def test_a_port_the_user_named_is_never_chosen_for_anything_else(monkeypatch):
    # `clusterhub up --port P` chooses the hub's, proxy API's and gateway's ports before the
    # proxy binds P: P must not be one of them (the hub and proxy would then share a port).
    from clusterhub import ports

    low = 29900
    monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{low + 6}")
    monkeypatch.setattr(ports, "_handed_out", set())
    ports.reserve(low)
    chosen = {free_port() for _ in range(6)}
    assert chosen == set(range(low + 1, low + 7))
