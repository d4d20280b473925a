"""The HTTP benchmark's floor of Python: a raw uvloop ``asyncio.Protocol`` answering fixed JSON.

No HTTP parser, no framework, no routing: each worker counts the request heads it reads (each ends with a
blank line; the bench's requests carry no body) and writes one fixed answer per head, as many bytes as a
typical serve answer (``bench.nginx.typical_body()``, the nginx reference's body). It is what any Python
server built on the event loop pays for its sockets alone, so a row's ratio to it is how much of the rest
its own work takes. Measured on 2026-12-06 it ran at 1.02-1.57x nginx, where the bare granian RSGI app
(``bench.minimal_rsgi``) ran at 0.36-0.38x (BENCHMARKS.md).

``serve(port, workers)`` binds one listening socket and forks ``workers`` processes accepting on it; the
parent waits and, on SIGTERM or SIGINT, stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from email.utils import formatdate
from typing import Final, cast

import uvloop

from bench.nginx import typical_body

BODY: Final = typical_body()
#: Bytes of request held while its head is incomplete, at most (the connection is closed past it).
MAX_HEAD_BYTES: Final = 64 * 1024


def answer() -> bytes:
    """The fixed answer: uvicorn's status line and default headers, then the body."""
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"date: {formatdate(usegmt=True)}\r\n"
        "server: uvicorn\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    )
    return head.encode("ascii") + BODY


class FixedAnswer(asyncio.Protocol):
    """One connection: an answer written for every complete request head read."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._transport: asyncio.Transport | None = None
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP server's

    def data_received(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
        end = data.rfind(b"\r\n\r\n")
        self._pending = data[end + 4 :] if end >= 0 else data
        transport = self._transport
        if transport is None:
            return
        if len(self._pending) > MAX_HEAD_BYTES:
            transport.close()
            return
        for _ in range(data.count(b"\r\n\r\n")):
            transport.write(self._response)


def _worker(listener: socket.socket) -> None:
    response = answer()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: FixedAnswer(response), sock=listener)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def serve(port: int, workers: int) -> int:
    """Serve on 127.0.0.1:``port`` with ``workers`` forked processes until SIGTERM/SIGINT; returns 0."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(2048)
    listener.setblocking(False)
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: default signal handling, dies with SIGTERM
            try:
                _worker(listener)
            finally:
                os._exit(0)
        children.append(pid)
    listener.close()

    def stop(signum: int, frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), int(sys.argv[2])))
