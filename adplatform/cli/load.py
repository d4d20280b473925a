"""``adplatform simulate`` and ``simulate-legacy``: simulated users against a running ad server."""

from __future__ import annotations

import click

from adplatform.cli.common import AT_LEAST_ONE, POSITIVE, config


async def redis_spend(redis_url: str, slot_s: int) -> str:
    """The platform's spend in Redis (one node or every master of a cluster), formatted; "n/a" when Redis
    cannot be read (the summary is printed all the same)."""
    from redis.exceptions import RedisClusterException, RedisError

    from adplatform.redis_client import open_redis
    from budget.budget_redis import BudgetStore
    from index.money import format_micros

    client = open_redis(redis_url, socket_timeout=5)  # the URL says which topology
    store = BudgetStore(client, slot_s=slot_s)
    try:
        return format_micros(sum((await store.spent_all()).values()))
    except (RedisError, RedisClusterException, OSError):
        return "n/a"
    finally:
        await store.aclose()
        await client.aclose()


def _simulate(
    dsn: str, ad_url: str, feedback_url: str, duration: float, rate: float, concurrency: int
) -> None:
    import asyncio

    from loadtest.simulator import Simulator, format_summary, load_users

    async def run() -> str:
        users = await load_users(dsn)
        try:
            sim = Simulator(
                users, ad_url=ad_url, feedback_url=feedback_url, rate=rate, concurrency=concurrency
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None

        def tick(s: object, elapsed: float) -> None:
            from loadtest.simulator import SimSummary

            assert isinstance(s, SimSummary)
            click.echo(
                f"\r[{elapsed:5.0f}s/{duration:.0f}s] requests {s.requests}  served {s.served}  "
                f"feedback {s.feedback_ok}  errors {s.errors}",
                nl=False,
                err=True,
            )

        summary = await sim.run(duration, on_tick=tick)
        click.echo("", err=True)
        cfg = config()
        return format_summary(summary, spend=await redis_spend(cfg.redis_url, cfg.slot_s))

    click.echo(asyncio.run(run()))


@click.command("simulate")
@click.option("--duration", type=POSITIVE, default=60, show_default=True, help="Seconds to run.")
@click.option("--rate", type=POSITIVE, default=200, show_default=True, help="Ad requests per second.")
@click.option(
    "--concurrency", type=AT_LEAST_ONE, default=32, show_default=True, help="Requests in flight at most."
)
@click.option("--server", default="http://127.0.0.1:8000", show_default=True, help="Ad server base URL.")
def simulate_cmd(duration: float, rate: float, concurrency: int, server: str) -> None:
    """Simulate users: ad requests, then feedback drawn from age-bucket action rates; prints a summary."""
    _simulate(config().pg_dsn, server, server, duration, rate, concurrency)


@click.command("simulate-legacy")
@click.argument("db_host")
@click.argument("db_user")
@click.argument("db_pass")
@click.argument("db_name")
@click.argument("scheme", type=click.Choice(["http", "https"]))
@click.argument("ad_host")
@click.argument("ad_port", type=click.IntRange(1, 65535))
@click.argument("fb_host")
@click.argument("fb_port", type=click.IntRange(1, 65535))
@click.option("--duration", type=POSITIVE, default=60, show_default=True, help="Seconds to run (bounded).")
@click.option("--rate", type=POSITIVE, default=200, show_default=True, help="Ad requests per second.")
@click.option(
    "--concurrency", type=AT_LEAST_ONE, default=32, show_default=True, help="Requests in flight at most."
)
def simulate_legacy_cmd(
    db_host: str, db_user: str, db_pass: str, db_name: str, scheme: str, ad_host: str, ad_port: int,
    fb_host: str, fb_port: int, duration: float, rate: float, concurrency: int,
) -> None:  # fmt: skip
    """The original simulator's command line: DB host/user/password/name, then the ad and feedback servers."""
    from urllib.parse import quote

    host, _, port = db_host.partition(":")
    dsn = f"postgresql://{quote(db_user)}:{quote(db_pass)}@{host}:{port or 5432}/{quote(db_name)}"
    _simulate(
        dsn, f"{scheme}://{ad_host}:{ad_port}", f"{scheme}://{fb_host}:{fb_port}", duration, rate, concurrency
    )


COMMANDS: tuple[click.Command, ...] = (simulate_cmd, simulate_legacy_cmd)
