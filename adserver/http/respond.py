"""Raw ASGI responses: the serve route and the middleware answer without building Response objects."""

from __future__ import annotations

from typing import Final

import orjson
from starlette.types import Send

JSON: Final = (b"content-type", b"application/json")
#: ``content-length`` headers by body length, built once each: bodies of the hot routes take a few dozen
#: lengths, and formatting the number cost about a tenth of ``send_json``.
_LENGTHS: Final = [(b"content-length", str(n).encode()) for n in range(1024)]


async def send_json(send: Send, status: int, body: bytes, *, retry_after_s: int | None = None) -> None:
    """One complete JSON response (``body`` already encoded)."""
    n = len(body)
    headers = [JSON, _LENGTHS[n] if n < 1024 else (b"content-length", str(n).encode())]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def detail(reason: str) -> bytes:
    """The error body every 4xx/5xx of this server uses: ``{"detail": "<reason>"}``."""
    return orjson.dumps({"detail": reason})
