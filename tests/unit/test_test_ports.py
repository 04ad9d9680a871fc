"""The test servers' ports come from below the ephemeral range, where no outgoing connection
can take one between choosing it and the server binding it."""

from __future__ import annotations

import socket

import pytest

from tests.ports import LOWEST, _ephemeral_start, free_port, own_range


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


def test_each_test_process_chooses_from_a_slice_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes of one run (pytest-xdist) cannot see each other's chosen ports: their slices
    of the room below the ephemeral range never overlap, and together cover it."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        low, high = own_range(LOWEST, _ephemeral_start())
        assert all(low <= free_port() < high for _ in range(50))
        slices.append(own_range(10_000, 32_768))
    assert slices == [(10_000, 17_589), (17_589, 25_178), (25_178, 32_767)]


def test_a_single_test_process_chooses_from_the_whole_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert own_range(10_000, 32_768) == (10_000, 32_768)
