"""Request bodies: read with a size limit (413), decoded as JSON, checked field by field with the Ad
Manager's own reasons (422, one per field), then converted to the schema's Struct."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from admin.error import AdminError

S = TypeVar("S", bound=msgspec.Struct)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise AdminError(413, f"Request body over {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise AdminError(413, f"Request body over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise AdminError(422, "Invalid request body.", errors={"body": "not JSON"}) from None
    if not isinstance(obj, dict):
        raise AdminError(422, "Invalid request body.", errors={"body": "not a JSON object"})
    return obj


def unknown_fields(obj: dict[str, Any], known: Collection[str]) -> dict[str, str]:
    return {name: "unknown field" for name in obj if name not in known}


def convert(obj: dict[str, Any], struct: type[S]) -> S:
    """The schema's own check, after the manager's: its constraints are never stricter, so this fails
    only on what the manager does not check (and then names the field msgspec names)."""
    try:
        return msgspec.convert(obj, struct)
    except msgspec.ValidationError as exc:
        raise AdminError(422, "Invalid request body.", errors={"body": str(exc)}) from None
