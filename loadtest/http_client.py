"""A small HTTP/1.1 keep-alive client for the load tools: the simulator's requests at a tenth of httpx's CPU.

The demo runs its simulator on the same two cores as the platform it measures, so the client's CPU is taken
from the ad server: httpx spent about 1.4 ms of CPU per request here (the demo's 200 users/s, with their
feedback about 400 requests/s, cost more than half a core), this client about 0.2 ms (httptools parses
the answers, the same C parser uvicorn uses). It does only what the load tools need: GET with a query,
POST with a JSON body, a pool of keep-alive connections per host, a timeout per request. Its errors are
httpx's transport errors (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``…) so a caller's
``except httpx.HTTPError`` and the summary's error kinds stay as they were.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import httptools
import httpx
import orjson

#: Methods whose requests carry no content unless given one: no ``content-length`` then.
_NO_CONTENT_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Reply:
    """An answer: its status and its whole body."""

    status_code: int
    content: bytes


class _Reading:
    """httptools callbacks: collect the body until the message is complete."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_headers_complete(self) -> None:
        # Asked here: once the message is complete the parser has moved on and answers False.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = False

    async def exchange(self, raw: bytes) -> tuple[Reply, bool]:
        """Send ``raw``, read one answer; returns it and whether the connection may be used again. A reused
        connection that the server had closed (idle timeout) gets ``_StaleError``: nothing was read."""
        self.writer.write(raw)
        reading = _Reading()
        parser = reading.parser = httptools.HttpResponseParser(reading)
        got_any = False
        while not reading.complete:
            data = await self.reader.read(65536)
            if not data:
                if not got_any and self.used:
                    raise _StaleError
                raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
            got_any = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"unparsable answer: {exc}") from exc
        self.used = True
        return Reply(parser.get_status_code(), b"".join(reading.body)), reading.keep_alive

    def close(self) -> None:
        self.writer.close()


class _StaleError(Exception):
    """A kept-alive connection the server had closed: the request was not read, send it again."""


class _Pool:
    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(max_connections)

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise httpx.ConnectError(f"{self.host}:{self.port}: {exc}") from exc
        return _Connection(reader, writer)

    async def exchange(self, raw: bytes) -> Reply:
        async with self.slots:
            while True:
                conn = self.idle.pop() if self.idle else await self._connect()
                try:
                    reply, keep = await conn.exchange(raw)
                except _StaleError:
                    conn.close()
                    continue  # a fresh connection next (the idle list empties)
                except OSError as exc:
                    conn.close()
                    raise httpx.ReadError(f"{self.host}:{self.port}: {exc}") from exc
                except BaseException:  # a timeout or a cancellation mid-answer: the connection is unusable
                    conn.close()
                    raise
                if keep:
                    self.idle.append(conn)
                else:
                    conn.close()
                return reply

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def encode_request(
    method: str, url: str, *, params: dict[str, str] | None = None, json: object = None
) -> tuple[str, int, bytes]:
    """``(host, port, the request's bytes)``: ``method url`` with ``params`` as its query and ``json`` as its
    body. Without a body a GET or HEAD sends no ``content-length``, as browsers and SDKs do (RFC 9110,
    8.6): the ad server answers such a serve GET from one match of its head, where a ``content-length:
    0`` sent it through the full parser and Starlette, so the demo measured a path real clients do not
    take."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = quote(parts.path, safe="/%:@!$&'()*+,;=~") or "/"
    if params:
        target += "?" + urlencode(params)
    body = b"" if json is None else orjson.dumps(json)
    head = f"{method} {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
    if body or method not in _NO_CONTENT_METHODS:
        head += f"content-length: {len(body)}\r\n"
    if json is not None:
        head += "content-type: application/json\r\n"
    return host, port, head.encode() + b"\r\n" + body


class SimClient:
    """Keep-alive connections to each host (at most ``max_connections`` each), ``timeout_s`` per request."""

    def __init__(self, *, max_connections: int = 32, timeout_s: float = 10.0) -> None:
        self._max = max_connections
        self._timeout_s = timeout_s
        self._pools: dict[tuple[str, int], _Pool] = {}

    async def request(
        self, method: str, url: str, *, params: dict[str, str] | None = None, json: object = None
    ) -> Reply:
        """``method url`` with ``params`` as its query and ``json`` as its body; httpx's errors."""
        host, port, message = encode_request(method, url, params=params, json=json)
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = _Pool(host, port, self._max)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await pool.exchange(message)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{method} {url}: no answer within {self._timeout_s:g}s") from exc

    async def get(self, url: str, *, params: dict[str, str] | None = None) -> Reply:
        return await self.request("GET", url, params=params)

    async def post(self, url: str, *, json: object = None) -> Reply:
        return await self.request("POST", url, json=json)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def __aenter__(self) -> SimClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
