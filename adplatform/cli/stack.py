"""``adplatform stack …``, ``migrate`` and ``topics``: the local stack, the schema, the topics."""

from __future__ import annotations

import sys

import click

from adplatform.cli.common import AT_LEAST_ONE, config


@click.group()
def stack() -> None:
    """The local stack: PostgreSQL :15432, Redis :16379, Kafka :19092 under .stack/ (no Docker)."""


TOPOLOGY = click.option(
    "--topology",
    type=click.Choice(["single", "cluster"]),
    default="single",
    show_default=True,
    help="single: one of each service. cluster: Redis Cluster 3 masters x 2 replicas (:17101-17109), "
    "3 Kafka brokers (:19291-19293), Spark master :17077 + 2 workers, under .stack/cluster/ "
    "(PostgreSQL shared).",
)


@stack.command("up")
@click.option(
    "--with-prometheus",
    is_flag=True,
    help="Also start Debian's Prometheus (apt-get install when missing) on :19090, scraping every "
    "service's /metrics as deploy/prometheus.yml lists them; `stack down` stops it.",
)
@TOPOLOGY
def stack_up(topology: str, with_prometheus: bool) -> None:
    """Install what is missing, start every service, wait until each answers, migrate, create topics."""
    from devstack import stack as st

    try:
        if topology == "cluster":
            from devstack import cluster

            cluster.up(config())
        else:
            st.up(config(), with_prometheus=with_prometheus)
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("fetch")
def stack_fetch() -> None:
    """Install missing system packages and fetch the Kafka and Spark jars (no service is started)."""
    from devstack import stack as st

    try:
        st.ensure_installed()
        st.fetch_jars(st.Paths(config().stack_dir))
    except (st.StackError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@stack.command("down")
@TOPOLOGY
def stack_down(topology: str) -> None:
    """Stop the services the stack started (by PID). Data stays in .stack/."""
    if topology == "cluster":
        from devstack import cluster

        cluster.down(config())
        return
    from devstack import stack as st

    st.down(config())


@stack.command("status")
@TOPOLOGY
def stack_status(topology: str) -> None:
    """Each service (each node of the cluster), its port, PID and health. Exits 1 when any is down."""
    if topology == "cluster":
        from devstack import cluster

        rows = cluster.status(config())
    else:
        from devstack import stack as st

        rows = st.status(config())
    width = max(10, *(len(name) for name, *_ in rows))
    click.echo(f"{'service':<{width}} {'port':>6} {'pid':>8}  health")
    for name, port, pid, ok in rows:
        click.echo(f"{name:<{width}} {port:>6} {pid or '-':>8}  {'up' if ok else 'DOWN'}")
    if not all(ok for *_, ok in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", required=False, type=click.Choice(["postgres", "redis", "kafka"]))
@click.option(
    "-n", "--lines", type=AT_LEAST_ONE, default=40, show_default=True, help="Lines from the end of each log."
)
def stack_logs(service: str | None, lines: int) -> None:
    """Show the end of each service's log under .stack/logs/."""
    from devstack import stack as st

    for name, path in st.log_files(config()).items():
        if service and name != service:
            continue
        click.secho(f"==> {path} <==", bold=True)
        if path.exists():
            click.echo("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


@stack.command("stop-service", hidden=True)
@click.argument("service", type=click.Choice(["postgres", "redis", "kafka"]))
def stack_stop_service(service: str) -> None:
    """Stop one service (fault-injection tests)."""
    from devstack import stack as st

    st.stop_service(config(), service)


@click.command("migrate")
def migrate_cmd() -> None:
    """Apply pending SQL migrations to the configured database."""
    import asyncio

    from adplatform.migrate import migrate_dsn

    applied = asyncio.run(migrate_dsn(config().pg_dsn))
    click.echo(f"applied: {', '.join(applied) or 'nothing (up to date)'}")


@click.command("topics")
def topics_cmd() -> None:
    """Create the platform's Kafka topics if missing."""
    import asyncio

    from adplatform.kafka import ensure_topics

    created = asyncio.run(ensure_topics(config()))
    click.echo(f"created: {', '.join(created) or 'nothing (all exist)'}")


COMMANDS: tuple[click.Command, ...] = (stack, migrate_cmd, topics_cmd)
