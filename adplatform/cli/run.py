"""``adplatform run``: every long-running service of the platform under one supervisor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from adplatform.cli.common import config
from adplatform.services import PLATFORM_SERVICES, WAREHOUSE_LOAD

if TYPE_CHECKING:
    from adplatform.config import Config
    from adplatform.supervisor import ChildSpec


_NAMES = [*(s.name for s in PLATFORM_SERVICES), WAREHOUSE_LOAD.name]


@click.command(
    "run",
    epilog=f"Services: {', '.join(s.name for s in PLATFORM_SERVICES)}; and {WAREHOUSE_LOAD.name} "
    "(`warehouse load` every ADP_WAREHOUSE_LOAD_INTERVAL_S seconds, when set above 0).",
)
@click.argument("services", nargs=-1, metavar="[SERVICE]...", type=click.Choice(_NAMES))
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
    them in order (the ad server first, the archive last) and exits 0. With ADP_WAREHOUSE_LOAD_INTERVAL_S
    set, `warehouse load` also runs every that many seconds (a run still going after an hour is stopped)."""
    from adplatform.supervisor import platform_children

    cfg = config()  # fail fast on a bad environment, before any child starts (each reads it again)
    try:
        children = platform_children(
            services,
            workers=workers,
            port=port,
            admin_port=admin_port,
            warehouse_load_interval_s=cfg.warehouse_load_interval_s,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _ensure_ports_free(services, port, admin_port)
    raise SystemExit(asyncio.run(_supervise(cfg, children)))


def _ensure_ports_free(services: tuple[str, ...], port: int | None, admin_port: int | None) -> None:
    """A port another process holds ends the command before any child starts, with one line: its service
    would fail to bind and be restarted, backing off, for as long as the port stays taken."""
    from adplatform.ports import listener
    from adplatform.services import ADMIN_PORT, ADSERVER_PORT

    wanted = [("the ad server", "adserver", port or ADSERVER_PORT, "--port"),
              ("the admin API", "admin", admin_port or ADMIN_PORT, "--admin-port")]  # fmt: skip
    for what, name, number, option in wanted:
        if services and name not in services:
            continue
        holder = listener(number)
        if holder is not None:
            raise click.ClickException(
                f"{what} needs port {number}, in use by {holder}; stop it, or give {what} another port "
                f"with {option} N"
            )


async def _supervise(cfg: Config, children: Sequence[ChildSpec]) -> int:
    """``run_supervised`` with the supervisor's restart counts on its metrics port."""
    from adplatform.metrics import register_restarts, serve_metrics
    from adplatform.process import stop_on_signals
    from adplatform.supervisor import Supervisor

    supervisor = Supervisor(children)
    register_restarts(supervisor.restarts)
    serve_metrics(cfg, "run")
    with stop_on_signals(supervisor.stop):
        return await supervisor.run()


COMMANDS: tuple[click.Command, ...] = (run_cmd,)
