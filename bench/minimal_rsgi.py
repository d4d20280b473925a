"""The HTTP benchmark's bare Python reference: a granian RSGI app answering every request with fixed JSON.

No framework, no routing, no state: granian's Rust HTTP stack and one Python call per request (issue 18).
Not Python's floor: a raw uvloop protocol (``bench.minimal_protocol``) outruns it several times over on
this machine. The body is ``bench.nginx.typical_body()``, as long as a typical serve answer, the same as
the nginx reference's.
"""

from __future__ import annotations

from typing import Final, Protocol

from bench.nginx import typical_body

BODY: Final = typical_body()
HEADERS: Final = [("content-type", "application/json")]


class _HTTPProtocol(Protocol):
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


class App:
    """The RSGI app: ``__rsgi__`` answers 200 with ``BODY`` whatever the request."""

    async def __rsgi__(self, scope: object, protocol: _HTTPProtocol) -> None:
        protocol.response_bytes(200, HEADERS, BODY)


app = App()
