"""Before the stack starts a service, its port must be free.

A port held by a process the stack did not start (another Redis, another checkout's stack, anything) made
the service fail to bind and ``stack up`` wait for it: Redis exited at once ("Address already in use" in
its log) and ``stack up`` said "Redis did not answer within 120s" two minutes later. Now ``stack up`` says
at once which port is taken and, when ``/proc`` tells, by which process (its PID and name; the listening
socket's inode from ``/proc/net/tcp``, its owner from the ``/proc/<pid>/fd`` links, which other users'
processes may hide).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from devstack.paths import StackError

#: ``/proc/net/tcp`` state of a listening socket.
_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local_address is HEXIP:HEXPORT; st is the socket's state; inode is the 10th field.
                if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _owner(inodes: set[str]) -> str | None:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        name = Path(f"/proc/{entry.name}/comm").read_text().strip()
                        return f"pid {entry.name} ({name})"
    return None


def listener(port: int) -> str | None:
    """Who listens on ``port`` on loopback: "pid N (name)", "a process /proc does not show" (another
    user's), or None when nothing answers there."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except OSError:
        return None
    return _owner(_listening_inodes(port)) or "a process /proc does not show"


def ensure_free(port: int, service: str) -> None:
    """A ``StackError`` naming the port and its holder when something already listens on ``port``."""
    holder = listener(port)
    if holder is not None:
        raise StackError(
            f"{service} cannot start: 127.0.0.1:{port} is already in use by {holder}, which this stack "
            "did not start; stop it (or the stack of the checkout that started it), then run "
            "`adplatform stack up` again"
        )
