"""The ``adplatform`` command: one CLI whose subcommands import their package lazily.

This module alone dispatches to every package; each command imports what it runs inside its body, so
``adplatform stack status`` does not pay for Spark or Starlette imports.
"""

from __future__ import annotations

import logging
import sys

import click

from adplatform.config import Config, ConfigError, load_config


def _config() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every retry at WARNING/ERROR; one line per outage is enough.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(config.log_level)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """adplatform: real-time ad platform (Kafka → PostgreSQL, in-memory auction, Redis budgets, Spark)."""


# --- stack ------------------------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local stack: PostgreSQL :15432, Redis :16379, Kafka :19092 under .stack/ (no Docker)."""


@stack.command("up")
def stack_up() -> None:
    """Install what is missing, start every service, wait until each answers, migrate, create topics."""
    from adplatform import stack as st

    try:
        st.up(_config())
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("fetch")
def stack_fetch() -> None:
    """Install missing system packages and fetch the Kafka and Spark jars (no service is started)."""
    from adplatform import stack as st

    try:
        st.ensure_installed()
        st.fetch_jars(st.Paths(_config().stack_dir))
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("down")
def stack_down() -> None:
    """Stop the services the stack started (by PID). Data stays in .stack/."""
    from adplatform import stack as st

    st.down(_config())


@stack.command("status")
def stack_status() -> None:
    """Each service, its port, PID and health. Exits 1 when any is down."""
    from adplatform import stack as st

    rows = st.status(_config())
    click.echo(f"{'service':<10} {'port':>6} {'pid':>8}  health")
    for name, port, pid, ok in rows:
        click.echo(f"{name:<10} {port:>6} {pid or '-':>8}  {'up' if ok else 'DOWN'}")
    if not all(ok for *_, ok in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", required=False, type=click.Choice(["postgres", "redis", "kafka"]))
@click.option("-n", "--lines", default=40, show_default=True, help="Lines from the end of each log.")
def stack_logs(service: str | None, lines: int) -> None:
    """Show the end of each service's log under .stack/logs/."""
    from adplatform import stack as st

    for name, path in st.log_files(_config()).items():
        if service and name != service:
            continue
        click.secho(f"==> {path} <==", bold=True)
        if path.exists():
            click.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


@stack.command("stop-service", hidden=True)
@click.argument("service", type=click.Choice(["postgres", "redis", "kafka"]))
def stack_stop_service(service: str) -> None:
    """Stop one service (fault-injection tests)."""
    from adplatform import stack as st

    st.stop_service(_config(), service)


@main.command("migrate")
def migrate_cmd() -> None:
    """Apply pending SQL migrations to the configured database."""
    import asyncio

    import asyncpg

    from adplatform.migrate import migrate

    config = _config()

    async def run() -> list[str]:
        conn = await asyncpg.connect(config.pg_dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")


@main.command("topics")
def topics_cmd() -> None:
    """Create the platform's Kafka topics if missing."""
    import asyncio

    from adplatform.kafka import ensure_topics

    created = asyncio.run(ensure_topics(_config()))
    click.echo(f"created: {', '.join(created) or 'nothing (all exist)'}")


if __name__ == "__main__":  # pragma: no cover
    main()
