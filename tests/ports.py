"""Loopback ports for tests: a free one to listen on, and one this process holds (another process's
port, as the code under test sees it)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from adplatform.ports import free_port

__all__ = ["free_port", "held_port"]


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port this process listens on until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
