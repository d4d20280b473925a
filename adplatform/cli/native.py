"""``adplatform native``: build the compiled hot path (``adplatform.native``), remove it, say which runs."""

from __future__ import annotations

import sys

import click


@click.group("native")
def native() -> None:
    """The serving hot path compiled with mypyc (`make native` builds it; a stale build is never run)."""


@native.command("build")
def build_cmd() -> None:
    """Compile the hot path in place (nothing to do when current). Without a C compiler: pure Python."""
    from adplatform.native import build

    sys.exit(build())


@native.command("clean")
def clean_cmd() -> None:
    """Remove the compiled libraries: every process started after runs pure Python."""
    from adplatform.native import remove

    click.echo(f"native: removed {remove()} compiled libraries; running pure Python")


@native.command("status")
def status_cmd() -> None:
    """compiled, stale (removed by the next process that starts) or pure."""
    from adplatform.native import MODULES, libraries, state

    click.echo(f"native: {state()} ({len(libraries())} of {len(MODULES) + 1} libraries)")


COMMANDS = [native]
