"""``adplatform admin`` (the admin service) and ``adplatform apikey create|list|revoke`` (its keys)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from adplatform.cli.common import config

T = TypeVar("T")


@click.command("admin")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8100, show_default=True, help="The port to listen on."
)
def admin_cmd(host: str, port: int) -> None:
    """Run the admin service: the /v1 campaign API, /docs, API keys and the audit trail."""
    import uvicorn

    from admin.settings import load_admin_config
    from adplatform.process import logging_config

    cfg = config()  # fail fast on a bad environment; the app's lifespan reads it again
    try:
        load_admin_config()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    uvicorn.run(
        "admin.app:app", host=host, port=port, loop="uvloop", lifespan="on", access_log=False,
        log_config=logging_config(cfg.log_level), timeout_graceful_shutdown=10,
    )  # fmt: skip


def _with_db(work: Callable[..., Awaitable[T]], *args: object) -> T:
    import asyncpg

    async def run() -> T:
        conn = await asyncpg.connect(config().pg_dsn)
        try:
            return await work(conn, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


@click.group("apikey")
def apikey() -> None:
    """API keys of the admin service (stored hashed; a key is shown once, when created)."""


@apikey.command("create")
@click.option("--name", required=True, help="Who holds the key: the author of its writes.")
@click.option(
    "--role", type=click.Choice(["read", "write", "admin"]), required=True,
    help="read: GET only; write: also create, update, stop and replay; admin: also the audit trail.",
)  # fmt: skip
def apikey_create(name: str, role: str) -> None:
    """Create a key and print it (only now: just its hash is kept)."""
    from admin.keys import ApiKeyError, create_key

    try:
        key = _with_db(create_key, name, role)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)
    click.echo(f"key {name!r} ({role}) created; it is shown only this once", err=True)


@apikey.command("list")
def apikey_list() -> None:
    """Every key: name, role, key id, created, revoked."""
    from admin.keys import list_keys

    keys = _with_db(list_keys)
    click.echo(f"{'NAME':<24} {'ROLE':<6} {'KEY ID':<12} {'CREATED':<20} REVOKED")
    for k in keys:
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if k.revoked_at else "-"
        click.echo(f"{k.name:<24} {k.role:<6} {k.key_id:<12} {k.created_at:%Y-%m-%d %H:%M:%S} {revoked}")


@apikey.command("revoke")
@click.argument("name")
def apikey_revoke(name: str) -> None:
    """Revoke the key called NAME (it stops working at once; its name stays taken)."""
    from admin.keys import revoke_key

    if not _with_db(revoke_key, name):
        click.echo(f"no active key named {name!r}", err=True)
        sys.exit(1)
    click.echo(f"key {name!r} revoked")


COMMANDS: tuple[click.Command, ...] = (admin_cmd, apikey)
