"""The ``adplatform`` command: one CLI whose subcommands import their package lazily.

This package alone dispatches to every room. One module per command group; each command parses its
arguments and calls one function, importing that function's room inside its body, so
``adplatform stack status`` does not pay for Spark or Starlette imports.
"""

from __future__ import annotations

import click

from adplatform.cli import (
    admin,
    archive,
    budget,
    campaign,
    dlq_api,
    ingest,
    load,
    native,
    reset,
    run,
    sandbox,
    serve,
    stack,
    warehouse,
)
from adplatform.cli.common import PlatformGroup


@click.group(cls=PlatformGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adplatform", prog_name="adplatform")
def main() -> None:
    """adplatform: real-time ad platform (Kafka → PostgreSQL, in-memory auction, Redis budgets, Spark).

    \b
    Exit status: 0 done; 1 the command failed (or found a difference);
    2 nothing was done: PostgreSQL, Redis or Kafka is not reachable (the one-line message names it
    and its address: start the local stack with `adplatform stack up`), a usage error, or a refused reset.
    """


for _module in (
    stack,
    ingest,
    serve,
    budget,
    load,
    archive,
    warehouse,
    reset,
    sandbox,
    run,
    admin,
    campaign,
    native,
):
    for _command in _module.COMMANDS:
        main.add_command(_command)
for _command in dlq_api.SUBCOMMANDS:
    ingest.dlq.add_command(_command)
