"""``adplatform ledger``, ``pacer``, ``reconcile``: the processes that keep the money right."""

from __future__ import annotations

import sys

import click

from adplatform.cli.common import AT_LEAST_ONE, POSITIVE, config, serve_metrics, setup_logging


@click.command("ledger")
@click.option("--until-idle", is_flag=True, help="Stop once every assigned partition is drained.")
@click.option("--timeout", type=POSITIVE, default=None, help="Stop after this many seconds at most.")
def ledger_cmd(until_idle: bool, timeout: float | None) -> None:
    """Run the spend ledger: ad-feedback → per-campaign spend in PostgreSQL, exactly once."""
    import asyncio

    from budget.ledger import run_ledger

    cfg = config()
    setup_logging(cfg)
    if not until_idle:
        serve_metrics(cfg, "ledger")
    stats = asyncio.run(run_ledger(cfg, until_idle=until_idle, timeout_s=timeout))
    click.echo(f"ledger: {stats.messages} events read, {stats.charged_events} charges booked")


@click.command("pacer")
@click.option("--slots", type=AT_LEAST_ONE, default=None, help="Stop after pacing this many slots (tests).")
def pacer_cmd(slots: int | None) -> None:
    """Run the slot pacer: at each slot boundary, slot budget = remaining budget / remaining slots."""
    import asyncio

    from budget.pacer import run_pacer

    cfg = config()
    setup_logging(cfg)
    if slots is None:
        serve_metrics(cfg, "pacer")
    acted = asyncio.run(run_pacer(cfg, slots=slots))
    click.echo(f"pacer: acted in {acted} slot(s)")


@click.command("reconcile")
@click.option("--check", is_flag=True, help="Only compare; exit 1 on any difference.")
@click.option("--interval", type=POSITIVE, default=None, help="Repeat every this many seconds (a service).")
@click.option(
    "--warehouse",
    is_flag=True,
    help="With --check: also the warehouse's books (ledger = feedback = campaign_day, days loaded).",
)
def reconcile_cmd(check: bool, interval: float | None, warehouse: bool) -> None:
    """Compare Redis spend with the ledger (PostgreSQL + unbooked events) and repair drift. With --check
    --warehouse also the ledger against the warehouse's feedback and campaign_day, per campaign and day
    loaded, to the micro: one line per difference, exit 1 on any."""
    import asyncio

    from budget.reconcile import run_reconcile

    if warehouse and (not check or interval is not None):
        raise click.UsageError("--warehouse goes with --check, without --interval")
    cfg = config()
    setup_logging(cfg)
    if interval is not None and not check:  # the reconciler service
        serve_metrics(cfg, "reconciler")
    status = asyncio.run(run_reconcile(cfg, check=check, interval_s=interval, echo=click.echo))
    if warehouse:
        from adplatform.cli.warehouse import books_check

        books = books_check(cfg)
        click.echo(f"warehouse: {books.summary()}")
        for line in books.difference_lines():
            click.echo(f"warehouse: {line}")
        status = max(status, 0 if books.balanced else 1)
    sys.exit(status)


COMMANDS: tuple[click.Command, ...] = (ledger_cmd, pacer_cmd, reconcile_cmd)
