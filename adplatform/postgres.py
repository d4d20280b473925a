"""PostgreSQL connection pools with the house settings: every process gets them from here.

``min_size=0`` so a process starts (and retries) while PostgreSQL is down; connect and command timeouts so
a cut connection raises instead of hanging (a blackholed socket never answers on its own).
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from adplatform.config import Config

CONNECT_TIMEOUT_S = 10


async def create_pool(config: Config, *, max_size: int = 2) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        config.pg_dsn,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=config.pg_command_timeout_s,
        # Idle connections go away after a minute, so a restarted server is not met with dead sockets.
        max_inactive_connection_lifetime=60,
    )
    assert pool is not None
    return pool


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted (embedded quotes doubled), for the statements that take no
    parameters (CREATE/DROP DATABASE, TRUNCATE): always a name, never a value."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A PostgreSQL string literal, quoted as the server's own ``quote_literal`` does (quotes doubled; with
    a backslash, an ``E''`` literal with backslashes doubled), for the statements that take no parameters
    (COMMENT): whatever ``text`` holds, it stays one literal."""
    if "\0" in text:
        raise ValueError("a PostgreSQL literal cannot hold a NUL character")
    quoted = text.replace("'", "''")
    if "\\" in text:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def truncate_statement(schema: str, tables: Iterable[str]) -> str:
    """One ``TRUNCATE`` of ``schema``'s ``tables``, every identifier quoted."""
    return "TRUNCATE " + ", ".join(f"{quote_ident(schema)}.{quote_ident(table)}" for table in tables)
