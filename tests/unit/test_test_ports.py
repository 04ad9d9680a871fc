"""The test servers' ports come from below the ephemeral range, where no outgoing connection
can take one between choosing it and the server binding it."""

from __future__ import annotations

import socket

from tests.ports import LOWEST, _ephemeral_start, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    for _ in range(20):
        port = free_port()
        assert LOWEST <= port < _ephemeral_start()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_somebody_listens_on_is_never_chosen() -> None:
    listeners = []
    try:
        taken = set()
        for _ in range(50):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
            listeners.append(sock)
            taken.add(sock.getsockname()[1])
        assert len(taken) == 50
        assert all(free_port() not in taken for _ in range(200))
    finally:
        for sock in listeners:
            sock.close()


def test_ports_chosen_before_anything_listens_are_all_different() -> None:
    """A cluster's twelve data and bus ports are chosen before any node starts: none listens
    yet, so only the chooser's memory keeps two of them from being the same port."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
