"""The ``adplatform`` command: one CLI whose subcommands import their package lazily.

This package alone dispatches to every room. One module per command group; each command parses its
arguments and calls one function, importing that function's room inside its body, so
``adplatform stack status`` does not pay for Spark or Starlette imports.
"""

from __future__ import annotations

import click

from adplatform.cli import archive, budget, ingest, load, reset, run, serve, stack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """adplatform: real-time ad platform (Kafka → PostgreSQL, in-memory auction, Redis budgets, Spark)."""


for _module in (stack, ingest, serve, budget, load, archive, reset, run):
    for _command in _module.COMMANDS:
        main.add_command(_command)
