"""``adplatform sandbox list|prune|drop``: the stores tests, the demo, chaos and benches made for themselves.

Each run works in a database ``<configured database>_<tag>`` and a Redis logical database (on Redis
Cluster, a key namespace) of its own (``adplatform.sandbox``). These commands show them, drop what runs
killed before their tear-down left, and drop one by name; they never touch the configured database, the
configured Redis database or anything without the sandbox marker.
"""

from __future__ import annotations

import sys

import click

from adplatform.cli.common import config

#: Exit status when a drop is refused (no ``--yes`` and no terminal to ask on, the answer was no, or the
#: sandbox's run is still going): nothing was done, as ``reset`` refused.
REFUSED = 2


@click.group("sandbox")
def sandbox() -> None:
    """The runs' own stores: list them, prune what killed runs left, drop one."""


@sandbox.command("list")
def list_cmd() -> None:
    """Every sandbox database and claimed Redis database, with its owner and whether its run is still
    going (running), exited without its tear-down (gone: `prune` drops it), kept by name (named: the
    demo's, until `make demo-down`), on another host, or made before owners were noted (unknown)."""
    import asyncio

    from adplatform.sandbox import list_sandboxes

    found = asyncio.run(list_sandboxes(config()))
    if not found:
        click.echo("no sandboxes")
        return
    rows = [("KIND", "NAME", "STATE", "CONNECTIONS", "OWNER")] + [
        (s.kind, s.name, s.state, "?" if s.connections is None else str(s.connections), s.owner or "-")
        for s in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        )


@sandbox.command("prune")
def prune_cmd() -> None:
    """Drop the sandbox databases and release the Redis databases of runs on this host whose process is
    gone and that nobody is connected to (what every run does before it opens its own)."""
    import asyncio

    from adplatform.sandbox import prune

    gone = asyncio.run(prune(config()))
    click.echo("pruned: " + ", ".join(gone) if gone else "nothing to prune")


@sandbox.command("drop")
@click.argument("database")
@click.option("--yes", is_flag=True, help="Confirm without asking (required when not on a terminal).")
def drop_cmd(database: str, yes: bool) -> None:
    """Drop one sandbox database by name (say one `list` shows as unknown: made before owners were
    noted), and release the Redis database its owner holds. Refused for a database without the sandbox
    marker and for a run still going."""
    import asyncio

    from adplatform.sandbox import SandboxError, drop_sandbox, sandbox_databases

    cfg = config()
    listed = {s.name: s for s in asyncio.run(sandbox_databases(cfg))}
    found = listed.get(database)
    if found is None:
        raise click.ClickException(f"no sandbox database {database!r} (`adplatform sandbox list` shows them)")
    if found.state == "running":
        click.echo(f"refusing to drop {database}: its run is still going ({found.owner})", err=True)
        sys.exit(REFUSED)
    if not yes:
        if not sys.stdin.isatty():
            click.echo(f"refusing to drop {database} without --yes (no terminal to confirm on)", err=True)
            sys.exit(REFUSED)
        if not click.confirm(f"This drops sandbox database {database} and all its data. Continue?"):
            click.echo("drop cancelled: nothing changed", err=True)
            sys.exit(REFUSED)
    try:
        released = asyncio.run(drop_sandbox(cfg, database))
    except SandboxError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"dropped {database}" + (f", released Redis {released}" if released else ""))


COMMANDS: tuple[click.Command, ...] = (sandbox,)
