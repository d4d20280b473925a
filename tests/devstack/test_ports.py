"""A service's port held by another process: ``stack up`` names the port and the process at once."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from adplatform.ports import free_ports, listener
from devstack.paths import StackError
from devstack.ports import ensure_free
from tests import ports


@pytest.fixture
def held_port() -> Iterator[int]:
    with ports.held_port() as port:
        yield port


def test_the_listener_is_named_by_pid_and_name(held_port: int) -> None:
    name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert listener(held_port) == f"pid {os.getpid()} ({name})"


def test_a_held_port_stops_the_start_with_one_line_naming_it(held_port: int) -> None:
    with pytest.raises(StackError) as caught:
        ensure_free(held_port, "Redis")
    message = str(caught.value)
    assert message.startswith(
        f"Redis cannot start: 127.0.0.1:{held_port} is already in use by pid {os.getpid()}"
    )
    assert "\n" not in message and "adplatform stack up" in message


def test_a_free_port_is_free() -> None:
    port = ports.free_port()
    assert listener(port) is None
    ensure_free(port, "Redis")


def test_free_ports_are_distinct_and_free_to_listen_on() -> None:
    """What the chaos scenarios' ad servers take (any fixed port may be another process's)."""
    picked = free_ports(4)
    assert len(set(picked)) == 4
    for port in picked:
        assert listener(port) is None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            assert listener(port) is not None
