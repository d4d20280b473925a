"""A service's port held by another process: ``stack up`` names the port and the process at once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adplatform.ports import listener
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
