"""A TCP proxy that can cut the network between a client and a service (after asyncpg's adversity tests).

It listens on 127.0.0.1 and forwards to the target. ``cut()`` resets every open connection and refuses
new ones (a crash or a firewall reject); ``blackhole()`` keeps connections open but forwards nothing and
accepts new ones that never answer (a partition, where only timeouts help); ``restore()`` heals. It runs
its own event loop in a thread, so processes started elsewhere can connect through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from enum import Enum


class Mode(Enum):
    PASS = "pass"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.PASS
        self._listen_port = listen_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._listen_port)
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def _stop(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: the peer sees a reset, as when a host or a firewall drops the connection.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            transport.abort()
        self._writers.clear()

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.CUT:
            self._reset_all()

    def _apply(self, mode: Mode) -> None:
        # Returns once the proxy's loop has applied the mode, so a caller's next step sees it.
        asyncio.run_coroutine_threadsafe(self._set(mode), self._loop).result(10)

    def cut(self) -> None:
        self._apply(Mode.CUT)

    def blackhole(self) -> None:
        self._apply(Mode.BLACKHOLE)

    def restore(self) -> None:
        self._apply(Mode.PASS)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.CUT:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                # The mode is set from another thread, so there is no Event to await here.
                while self.mode is Mode.BLACKHOLE:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # hold the bytes: the peer waits for an answer that never comes
                if self.mode is Mode.CUT:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
