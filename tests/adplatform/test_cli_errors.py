"""Errors people can read: a command whose service is down prints one line naming the service, its address
and what to run, exits 2 and closes its clients; --version; help on every command and option.

The services are pointed at port 1 on loopback, where nothing listens (not the stack's ports, so these
tests stay unmarked)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import click
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from click.testing import CliRunner

from adplatform.cli import main
from adplatform.cli.common import SERVICE_DOWN
from adplatform.errors import service_of, unreachable_service
from tests.ports import free_port, held_port

DOWN = {
    "ADP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "ADP_PG_DSN": "postgresql://postgres:secret@127.0.0.1:1/adplatform",
    "ADP_REDIS_URL": "redis://127.0.0.1:1/0",
}
ROOT = Path(__file__).resolve().parents[2]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")} | DOWN
    return subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "service", "variable"),
    [
        (("produce", "{csv}"), "Kafka", "ADP_KAFKA_BOOTSTRAP"),
        (("dlq", "show"), "Kafka", "ADP_KAFKA_BOOTSTRAP"),
        (("topics",), "Kafka", "ADP_KAFKA_BOOTSTRAP"),
        (("manager", "--until-idle", "--timeout", "5"), "Kafka", "ADP_KAFKA_BOOTSTRAP"),
        (("migrate",), "PostgreSQL", "ADP_PG_DSN"),
        (("generate", "users", "--count", "1"), "PostgreSQL", "ADP_PG_DSN"),
        (("reconcile", "--check"), "Redis", "ADP_REDIS_URL"),
        (("sandbox", "list"), "PostgreSQL", "ADP_PG_DSN"),
        (("sandbox", "prune"), "Redis", "ADP_REDIS_URL"),
        (("sandbox", "drop", "adplatform_test_x", "--yes"), "PostgreSQL", "ADP_PG_DSN"),
    ],
)
def test_a_service_down_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], service: str, variable: str
) -> None:
    csv = tmp_path / "campaigns.csv"
    csv.write_text("campaign_id\n1\n")
    result = _cli(tmp_path, *(a.format(csv=csv) for a in args))
    assert result.returncode == SERVICE_DOWN == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no "Unclosed AIOKafkaProducer", no log line
    assert lines[0].startswith(f"Error: {service} is not reachable at 127.0.0.1:1 (")
    assert "`adplatform stack up`" in lines[0] and variable in lines[0]
    assert "secret" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("campaign", "list"),
        ("campaign", "stop", "c1", "--wait"),
        ("dlq", "list"),
        ("explain", "--city", "Pune"),
    ],
)
def test_the_admin_service_down_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """The admin service's clients: no answer at ADP_ADMIN_URL names it, its address and what to run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    env |= {"ADP_ADMIN_URL": "http://127.0.0.1:1", "ADP_API_KEY": "adp_k.secret-value"}
    result = subprocess.run(
        [sys.executable, "-m", "adplatform.cli", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == SERVICE_DOWN, result.stderr
    assert result.stderr.splitlines() == [
        "Error: The admin service is not reachable at 127.0.0.1:1 (connection refused); start it with "
        "`adplatform admin` (or every service with `adplatform run`), or point ADP_ADMIN_URL (--admin-url) "
        "at a running admin service"
    ]
    assert result.stdout == ""


def test_other_errors_are_not_reported_as_a_service_down() -> None:
    assert unreachable_service(ValueError("a bug")) is None
    assert unreachable_service(ConnectionRefusedError(111, "refused")) is None  # whose? nobody's: raised
    assert unreachable_service(asyncpg.InvalidPasswordError("no")) is None  # waiting will not fix it


async def test_the_service_is_named_from_the_client_that_failed() -> None:
    with pytest.raises(OSError) as pg:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:1/x", timeout=5)
    assert service_of(pg.value) == "postgres"  # a bare OSError: named by asyncpg's frames
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(redis.exceptions.ConnectionError) as rd:
            await client.ping()
    finally:
        await client.aclose()
    assert unreachable_service(rd.value) == ("redis", rd.value)
    group = ExceptionGroup("gathered", [ValueError("x"), pg.value])
    assert unreachable_service(group) == ("postgres", pg.value)


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"adplatform, version {importlib.metadata.version('adplatform')}"


def _commands(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in _commands(main, "adplatform"):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{path} {'/'.join(param.opts)}")
    assert missing == []


def test_exit_status_is_documented() -> None:
    assert "Exit status" in (main.help or "") and "adplatform stack up" in (main.help or "")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("generate", "campaigns", "--count", "-5", "-o", "{out}"), "--count"),
        (("generate", "campaigns", "--count", "0", "-o", "{out}"), "--count"),
        (("generate", "users", "--count", "0"), "--count"),
        (("produce", "{out}", "--rate", "0"), "--rate"),
        (("manager", "--until-idle", "--timeout", "-1"), "--timeout"),
        (("served-writer", "--until-idle", "--timeout", "0"), "--timeout"),
        (("ledger", "--until-idle", "--timeout", "0"), "--timeout"),
        (("pacer", "--slots", "0"), "--slots"),
        (("reconcile", "--interval", "0"), "--interval"),
        (("dlq", "show", "--limit", "-1"), "--limit"),
        (("simulate", "--rate", "-1"), "--rate"),
        (("simulate", "--duration", "0"), "--duration"),
        (("simulate", "--concurrency", "0"), "--concurrency"),
        (("stack", "logs", "-n", "0"), "--lines"),
    ],
)
def test_a_count_rate_or_duration_that_is_not_positive_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    """Exit 2 naming the option, before anything runs (no service is reached, no file written): not a
    run that does nothing and says so with exit 0, spins, or never ends."""
    out = tmp_path / "campaigns.csv"
    if args[0] == "produce":
        out.write_text("campaign_id\n")
    result = CliRunner().invoke(main, [a.replace("{out}", str(out)) for a in args], env=DOWN)
    assert result.exit_code == 2, result.output
    assert "Invalid value for" in result.output and f"'{option}'" in result.output, result.output
    assert "not reachable" not in result.output
    if args[0] != "produce":
        assert not out.exists()


def test_every_numeric_option_and_argument_is_bounded() -> None:
    """A count, rate, duration, limit or port takes a range (``click.IntRange``/``FloatRange``), so a
    nonsense value is refused by name; a seed may be any integer."""
    unbounded = [
        f"{path} {'/'.join(param.opts)}"
        for path, command in _commands(main, "adplatform")
        for param in command.params
        if param.type in (click.INT, click.FLOAT) and param.name != "seed"
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("module", "args", "service"),
    [
        ("loadtest.demo", ("--down",), "PostgreSQL"),  # `make demo-down` with the stack stopped
        ("loadtest.demo", ("--duration", "1", "--port", "{port}"), "Redis"),
        ("loadtest.chaos", ("--fast", "redis-wipe"), "Redis"),
        ("bench.feedback_http", ("--rounds", "1", "--duration", "1"), "Redis"),  # its sandbox first
    ],
)
def test_the_scripts_say_a_service_is_down_in_one_line(
    tmp_path: Path, module: str, args: tuple[str, ...], service: str
) -> None:
    """The demo, chaos and the benches end as the CLI does (``script_main``): one line, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")} | DOWN | {"PYTHONPATH": str(ROOT)}
    port = str(free_port())  # for the demo's ad server (8000 may be taken here)
    done = subprocess.run(
        [sys.executable, "-m", module, *(a.replace("{port}", port) for a in args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == SERVICE_DOWN, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: {service} is not reachable at 127.0.0.1:1 ("), lines[0]


@pytest.mark.parametrize(
    ("services", "option", "what"),
    [((), "--port", "the ad server"), (("admin",), "--admin-port", "the admin API")],
)
def test_run_with_a_port_in_use_starts_nothing_and_says_which(
    services: tuple[str, ...], option: str, what: str
) -> None:
    with held_port() as port:
        result = CliRunner().invoke(main, ["run", *services, option, str(port)], env=DOWN)
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith(f"Error: {what} needs port {port}, in use by pid {os.getpid()} ("), line
    assert line.endswith(f"with {option} N") and "\n" not in line
