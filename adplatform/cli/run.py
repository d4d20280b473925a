"""``adplatform run``: every long-running service of the platform under one supervisor."""

from __future__ import annotations

import asyncio

import click

from adplatform.cli.common import config
from adplatform.services import PLATFORM_SERVICES


@click.command("run", epilog=f"Services: {', '.join(s.name for s in PLATFORM_SERVICES)}.")
@click.argument(
    "services", nargs=-1, metavar="[SERVICE]...", type=click.Choice([s.name for s in PLATFORM_SERVICES])
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=None, help="The ad server's workers [default: 2]."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="The ad server's port [default: 8000]."
)
@click.option(
    "--admin-port", type=click.IntRange(1, 65535), default=None, help="The admin API's port [default: 8100]."
)
def run_cmd(services: tuple[str, ...], workers: int | None, port: int | None, admin_port: int | None) -> None:
    """Run the platform's services (all, or the SERVICEs named), each as a child process with its own
    process group: one log stream on stdout with the service's name on each line; a crashed service is
    restarted after a backoff (1 s doubling to 30 s), one that exits 0 is not; Ctrl-C or SIGTERM stops
    them in order (the ad server first, the archive last) and exits 0."""
    from adplatform.supervisor import platform_children, run_supervised

    config()  # fail fast on a bad environment, before any child starts (each reads it again)
    raise SystemExit(
        asyncio.run(
            run_supervised(platform_children(services, workers=workers, port=port, admin_port=admin_port))
        )
    )


COMMANDS: tuple[click.Command, ...] = (run_cmd,)
