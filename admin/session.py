"""The dashboard's sessions: an API key logs in once, the browser then holds an opaque session id.

Sessions live in the admin process (server-side: the cookie carries 256 random bits and nothing else, so
there is no signing key to configure or rotate); a restart of the admin service logs everyone out. A
session remembers the key's *name* and role, never the key: each request re-reads the key's row, so a
revoked key loses its sessions at once. Every session has its own CSRF token, which each write must echo
in ``X-CSRF-Token`` (or a ``csrf`` form field); the cookie is HttpOnly and SameSite=Strict on top.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from admin.keys import ROLES, Principal, Role
from admin.store import Conn

COOKIE: Final = "adp_dashboard"
COOKIE_PATH: Final = "/dashboard"
#: A session ends this long after login, whatever its use.
MAX_AGE_S: Final = 12 * 3600
#: Sessions kept at most (the oldest go first): a bound on memory, not a limit anyone should meet.
MAX_SESSIONS: Final = 10_000
CSRF_HEADER: Final = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    """A logged-in browser: whose key (by name), its role at login, and the session's CSRF token."""

    name: str
    role: Role
    csrf: str
    expires_s: float


class SessionStore:
    """Session id → ``Session``, in memory, bounded, expiring."""

    def __init__(self, *, max_sessions: int = MAX_SESSIONS, max_age_s: float = MAX_AGE_S) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_age_s = max_age_s

    def create(self, principal: Principal) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(
            principal.name, principal.role, secrets.token_urlsafe(32), time.time() + self._max_age_s
        )
        self._sessions[sid] = session
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires_s <= time.time():
            del self._sessions[sid]
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)


async def still_valid(conn: Conn, session: Session) -> Principal | None:
    """The session's principal if its key is still active (keys keep their name after revocation, so the
    name is never someone else's); None once revoked."""
    role: str | None = await conn.fetchval(
        "SELECT role FROM online_ads.api_keys WHERE name = $1 AND revoked_at IS NULL", session.name
    )
    if role is None or role not in ROLES:
        return None
    return Principal(session.name, role)


def csrf_ok(session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode())


def same_origin(request: Request) -> bool:
    """A POST from another site's page is refused whatever its cookies: browsers send ``Origin`` on every
    cross-origin POST; its absence (curl, an old browser) is left to the CSRF token."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def set_cookie(response: Response, request: Request, sid: str) -> None:
    response.set_cookie(
        COOKIE, sid, max_age=int(MAX_AGE_S), path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",  # plain http on loopback would never send a Secure cookie
    )  # fmt: skip


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
