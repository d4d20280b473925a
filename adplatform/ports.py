"""Who listens on a TCP port on loopback, for the one-line errors of commands that need one free (``stack
up`` for the stack's services, ``adplatform run`` and the demo for the ad server and the admin service);
and free ports for what needs one of its own (the chaos scenarios' ad servers, the tests).

A port held by another process made the service that wanted it fail to bind while its starter waited for
it (``stack up`` said "Redis did not answer within 120s" two minutes after Redis had exited with "Address
already in use"). The holder is named when ``/proc`` tells: the listening socket's inode from
``/proc/net/tcp``, its owner from the ``/proc/<pid>/fd`` links (other users' processes may hide theirs).
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

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


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on now (the kernel's picks, each held until all
    are picked)."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick)."""
    return free_ports(1)[0]
