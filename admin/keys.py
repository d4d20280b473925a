"""API keys: created once (shown once), stored as SHA-256 only, checked in constant time, revocable.

A key is ``adp_<key_id>.<secret>``: ``key_id`` (12 hex digits) finds the row, and the SHA-256 of the whole
key is compared with ``hmac.compare_digest``. The secret has 256 bits of entropy, so an unsalted fast hash
is enough (nothing to brute-force); a stolen table reveals no usable key. Keys never enter a repr or a log:
``Principal`` carries the key's name and role only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import asyncpg

Role = Literal["read", "write", "admin"]
ROLES: Final[tuple[Role, ...]] = ("read", "write", "admin")
_RANK: Final[dict[str, int]] = {role: i for i, role in enumerate(ROLES)}
_KEY = re.compile(r"adp_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})")
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class ApiKeyError(ValueError):
    """A key name or role that cannot be used (bad spelling, already taken, unknown)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (the author of their writes) and its role."""

    name: str
    role: Role

    def allows(self, needed: Role) -> bool:
        return _RANK[self.role] >= _RANK[needed]


@dataclass(frozen=True)
class KeyInfo:
    """A stored key as listed: never its secret nor its hash."""

    name: str
    role: Role
    key_id: str
    created_at: datetime
    revoked_at: datetime | None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"adp_{key_id}.{secrets.token_urlsafe(32)}"


async def create_key(conn: asyncpg.Connection | asyncpg.Pool, name: str, role: str) -> str:
    """Store a new key under ``name`` with ``role``; returns the key itself (the only time it exists)."""
    if not NAME.fullmatch(name):
        raise ApiKeyError(f"invalid key name {name!r}: 1-64 of letters, digits and _.@-")
    if role not in _RANK:
        raise ApiKeyError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    key_id, key = new_key()
    try:
        await conn.execute(
            "INSERT INTO online_ads.api_keys (name, key_id, key_sha256, role) VALUES ($1, $2, $3, $4)",
            name, key_id, _digest(key), role,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise ApiKeyError(f"a key named {name!r} exists already (revoked keys keep their name)") from None
    return key


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[KeyInfo]:
    rows = await conn.fetch(
        "SELECT name, role, key_id, created_at, revoked_at FROM online_ads.api_keys ORDER BY name"
    )
    return [KeyInfo(r["name"], r["role"], r["key_id"], r["created_at"], r["revoked_at"]) for r in rows]


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> bool:
    """Revoke the key called ``name``; False when there is no such active key."""
    done = await conn.execute(
        "UPDATE online_ads.api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name
    )
    return str(done).endswith(" 1")


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> Principal | None:
    """The principal of an active key, or None for anything else (malformed, unknown, revoked)."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    row = await conn.fetchrow(
        "SELECT name, role, key_sha256 FROM online_ads.api_keys WHERE key_id = $1 AND revoked_at IS NULL",
        match[1],
    )
    if row is None or not hmac.compare_digest(bytes(row["key_sha256"]), _digest(key)):
        return None
    role: Role = row["role"]
    return Principal(row["name"], role)
