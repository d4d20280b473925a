"""Who is calling: the API key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` → a ``Principal``.

401 without a key or with one that is not active; 403 when the key's role is below what the route needs
(``read`` < ``write`` < ``admin``). The key itself is never logged nor kept beyond this call.
"""

from __future__ import annotations

from starlette.requests import Request

from admin.error import AdminError
from admin.keys import Principal, Role, authenticate
from admin.state import AdminState

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="adplatform-admin"'}


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return request.headers.get("x-api-key")


async def require(state: AdminState, request: Request, role: Role) -> Principal:
    key = presented_key(request)
    if not key:
        raise AdminError(401, "An API key is required (Authorization: Bearer KEY).", headers=_CHALLENGE)
    principal = await authenticate(state.pool, key)
    if principal is None:
        raise AdminError(401, "Invalid or revoked API key.", headers=_CHALLENGE)
    if not principal.allows(role):
        raise AdminError(403, f"This needs the {role} role; the key {principal.name!r} has {principal.role}.")
    return principal
