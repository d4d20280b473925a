"""``adplatform reset``: empty the user's data, only when confirmed."""

from __future__ import annotations

import sys

import click

from adplatform.cli.common import config

#: Exit status when a reset is refused (no ``--yes`` and no terminal to ask on, or the answer was no).
REFUSED = 2


@click.command("reset")
@click.option("--yes", is_flag=True, help="Confirm without asking (required when not on a terminal).")
def reset_cmd(yes: bool) -> None:
    """Empty the configured database's tables (the admin API keys are kept), Redis database and topics.
    Stop the services first.

    Nothing else in adplatform (tests, demo, chaos, benches) empties them: those work in their own."""
    import asyncio

    from adplatform.reset import describe, reset_data

    cfg = config()
    what = describe(cfg)
    if not yes:
        if not sys.stdin.isatty():
            click.echo(f"refusing to reset without --yes (no terminal to confirm on): {what}", err=True)
            sys.exit(REFUSED)
        if not click.confirm(f"This deletes all data in {what}. Continue?", default=False):
            click.echo("reset cancelled: nothing changed", err=True)
            sys.exit(REFUSED)
    done = asyncio.run(reset_data(cfg))
    click.echo(
        f"reset: {len(done.tables)} tables emptied (API keys kept), {done.redis_keys} Redis keys deleted, "
        f"{len(done.topics)} topics recreated"
    )


COMMANDS: tuple[click.Command, ...] = (reset_cmd,)
